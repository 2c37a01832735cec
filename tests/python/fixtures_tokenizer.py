#!/usr/bin/env python3
"""Fixtures for tests/unit/test_tokenizer.cpp (writes --out DIR, i.e. $INSTINCT_FIXTURES/tokenizer/).

Expected values come from SAM3's own SimpleTokenizer (sam3/model/tokenizer_ve.py) in the SAM3
source tree named by $SAM3_SRC (the directory holding sam3/), called as SAM3's text encoder calls it.
Without $SAM3_SRC (or without the `regex` or `torch` modules: python3-regex, python3-torch) it writes
only SKIPPED.txt with the reason; the C++ test then skips (no $SAM3_SRC) or fails with that reason.
--random N / --seed S choose the random texts (default 3000, fixed seed); a larger run, e.g.
--random 40000 --seed 7 into another directory, is a cheap deeper check.

tokenizer_ve.py is loaded on its own (importing the sam3 package would build the whole model stack).
Stand-ins, for this script only:
  ftfy   always an identity fix_text, also when ftfy is installed: the C++ tokenizer deliberately
         does not reproduce ftfy (see include/instinct/text/tokenizer.h), so this is the behaviour
         under test. Real ftfy also changes curly quotes, ligatures, fullwidth forms, decomposed
         accents (NFC) and control characters, besides mojibake.
  iopath when missing: g_pathmgr.open is the builtin open.

cases.json:
  vocab, context_length (32), ftfy ("identity")
  cases: [{kind, text, clean, encode, tokens}]  clean = tokenizer.clean_fn(text) (the text the regex
         sees), encode = tokenizer.encode(text), tokens = tokenizer([text], context_length=32)[0]
  decode: [{ids, text}]  tokenizer.decode(ids) for random id sequences (some split UTF-8 characters)
Kinds: coco (80 class names), punct, digits, case, contraction, unicode, html, space, special,
long (cut at 32: "dog" repeated 25..40 times, sentences), cased (every code point that str.lower
changes, 12 per text), classes (code points on each side of every boundary between the regex's
character classes and of White_Space), random (seeded strings from a pool of all of the above).
Random texts whose HTML unescaping would use an HTML5-only entity name (outside the C++ subset:
HTML 4.01 + apos + AMP/LT/GT/QUOT/COPY/REG) are drawn again.
"""
import argparse
import html
import html.entities
import importlib.util
import json
import os
import pathlib
import random
import sys
import types

CONTEXT = 32  # VETextEncoder(context_length=32), sam3/model/text_encoder_ve.py

COCO = [
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush"]
assert len(COCO) == 80

FIXED = {
    "coco": COCO,
    "punct": ["!", "?!", "...", "a,b", "hello, world!", "(dog)", "[cat] {x}", "@#$%^&*", "e-mail",
              "rock'n'roll", "a.b.c.", "'", "''", "'''s", "-_-", ":-)", "~`|\\/", "\"quoted\"",
              "dog!!!cat???", "a+b=c", "50%", "#hashtag", "@user", "x_y_z", "tab\\t"],
    "digits": ["0", "2024", "3.14159", "1,000,000", "v2", "x86_64", "0x1F", "12345678901234567890",
               "٣٤", "１２３", "Ⅻ", "½", "x²", "①②", "१२३", "a1b2c3", "007"],
    "case": ["HeLLo WoRLD", "iPhone", "McDonald's", "DOG", "A DOG AND A CAT", "ÉCOLE", "ΑΘΗΝΑ",
             "Ǆemal ǅemal ǆemal", "КОШКА", "ǈ"],
    "contraction": ["don't", "it's", "we're", "they've", "i'm", "we'll", "he'd", "DON'T", "IT'S",
                    "We'Re", "'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'sa", "'ss", "'x",
                    "dog's bowl", "o'clock", "'ſ", "'ſtar", "it'ſ", "don’t", "'S", "''s", "'1"],
    "unicode": ["café", "naïve", "résumé", "cafe\u0301", "猫", "狗と猫", "日本語のテキスト", "고양이",
                "🐶", "🐱‍👤", "🇫🇷", "👍🏽", "dog🐶cat", "ΟΔΟΣ", "Σ", "ΣΑΣ Σ", "ὈΔΥΣΣΕΎΣ", "ΑΣ.",
                "Straße", "STRASSE", "ẞ", "İstanbul", "ı", "İ", "a\u0300\u0301", "ᾳ", "\u0345",
                "a\u0345b", "!\u0345!", "ᾼ", "قطة", "חתול", "बिल्ली", "แมว", "ﬁsh", "K", "Å",
                "Ꭰ", "ᏸ", "𐐀𐐨", "Ⴀ", "Ა", "𝐀𝐁", "ſ", "\u200b", "\ufeffdog", "\ufffd", "\U0010fffd",
                "\ufdd0", "\x00", "a\x07b", "\x7f", "\u0085dog", "\u00ad", "\ue000"],
    "html": ["&amp;", "&lt;b&gt;", "&quot;hi&quot;", "&#39;", "&#x27;", "&#65;", "&#X41;", "&nbsp;",
             "a&nbsp;b", "&amp;amp;", "&amp;lt;", "&amp;amp;amp;", "&notit;", "&notin;", "&ampx",
             "&#0;", "&#128;", "&#150;", "&#x81;", "&#xD800;", "&#1114112;", "&#1114111;",
             "&#99999999999999999999;", "&#1;", "&#11;", "&#xFFFE;", "&#x1FFFF;", "&#13;", "&#127;",
             "&#xFDD0;", "&eacute", "&Eacute;", "&unknown;", "&;", "&", "& amp;", "&#;", "&#x;",
             "AT&T", "&hellip;", "&euro;", "&lang;&rang;", "&apos;", "&COPY", "&REG;", "&AMP;lt;",
             "&lt", "&gt&lt", "&amp&amp", "&#65&#66", "&#x41x", "&#0065;", "&frac12;", "&sup2",
             "&abcdefghijklmnopqrstuvwxyzabcdefghijk;", "&notabcdefghijklmnopqrstuvwxyzabcdefg",
             "&Alpha;&omega;&sigmaf;", "&#x3A3;&#x3a3;", "&#38;amp;", "&#38;#38;", "&amp;#39;",
             "&\tamp;", "&\ramp;", "&ampé", "&quot", "&QUOT;"],
    "space": ["  dog  ", "\tdog\ncat\r\n", "a\u00a0b", "a\u3000b", "\x1cdog\x1c", "a\x1cb",
              "a \x1c b", "\u2028dog\u2029", "\x85", "\u180e", "a\u200bb", " ", "\t\n\r\x0b\x0c",
              "dog    cat", "\u2003", " \x1c\x1d\x1e\x1f "],
    "special": ["", "<start_of_text>", "<end_of_text>", "<START_OF_TEXT>", "a<start_of_text>b",
                "!<start_of_text>", "<start_of_text><end_of_text>", "<ſtart_of_text>", "<start_of_text",
                "<end_of_text>dog", "&lt;start_of_text&gt;"],
    "long": ["a photo of a " * 10, "the quick brown fox jumps over the lazy dog " * 4,
             "a small red car parked next to a tall green tree on a sunny day in the city centre",
             "supercalifragilisticexpialidocious" * 3, "🐶" * 40, "猫" * 40, "1234567890" * 5]
              + [" ".join(["dog"] * n) for n in range(25, 41)],
}


def cased_texts():
    """Every code point that str.lower() changes, 12 per text (cased neighbours: final-sigma contexts)."""
    cased = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF and chr(c).lower() != chr(c)]
    return ["".join(cased[i:i + 12]) for i in range(0, len(cased), 12)]


def class_texts(regex):
    """Code points on both sides of every boundary between the tokenizer regex's classes (and
    str.isspace), skipping surrogates; 8 per text, joined by the letter 'x' (letters join its run,
    the others split it)."""
    classes = regex.compile(r"(\s)|([\p{L}])|([\p{N}])|([^\s\p{L}\p{N}])", regex.IGNORECASE)
    edges, prev = set(), None
    for c in range(0x110000):
        if 0xD800 <= c <= 0xDFFF:
            continue
        m = classes.fullmatch(chr(c))  # lastindex 1 \s, 2 letter, 3 number, 4 other; None: no branch
        k = (m.lastindex if m else None, chr(c).isspace())
        if prev is not None and k != prev[1]:
            edges |= {prev[0], c}
        prev = (c, k)
    edges = sorted(edges)
    return ["x".join(chr(c) for c in edges[i:i + 8]) for i in range(0, len(edges), 8)]


SUBSET = set(html.entities.name2codepoint) | {"apos", "AMP", "LT", "GT", "QUOT", "COPY", "REG"}


def uses_html5_only_name(text):
    """True when html.unescape (twice) would resolve a name outside the C++ subset."""
    for _ in range(2):
        for m in html._charref.finditer(text):
            s = m.group(1)
            if s[0] != "#" and s in html.entities.html5 and s.rstrip(";") not in SUBSET:
                return True
        text = html.unescape(text)
    return False


POOL = (list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
        + list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~") + ["'"] * 6 + ["&"] * 4 + [";"] * 3 + ["#"] * 2
        + [" "] * 12 + ["\t", "\n", "\r", "\x0b", "\x0c", "\x1c", "\x1f", "\x85", "\xa0", "\u2009",
                         "\u3000", "\u2028", "\u200b"]
        + list("éèêëàâäçñøåæœÿÉÀÇÑØÅÆŒŸ") + ["e\u0301", "\u0300", "\u0301", "\u0307", "\u0345", "\u20dd"]
        + list("猫狗鳥日本語中文字漢한국어고양이") + ["🐶", "🐱", "👍🏽", "🇫🇷", "\u200d", "❤️", "🍕"]
        + list("ΑΒΓΔΣσςΩαβγδωΟΔΥΣΣΕΎΣάΐ") + list("ßẞİıſKÅǄǅǆ") + list("КОШКАкошка")
        + list("٣٤١２３Ⅻⅻ½²①१") + list("ＡＢＣａｂｃ") + ["ﬁ", "ﬂ", "𝐀", "𐐀", "𐐨", "Ꭰ", "ꭰ", "Ⴀ", "ⴀ"]
        + ["\x00", "\x07", "\x7f", "\ufffd", "\ufeff", "\ue000"]
        + ["amp", "lt", "gt", "quot", "nbsp", "#39", "#x27", "#128", "#0", "eacute", "not", "apos",
           "&amp;", "&lt;", "&#", "&#x"]
        + ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "n't", "'S", "'ſ"]
        + ["<start_of_text>", "<end_of_text>", "<START_OF_TEXT>", "<"]
        + ["dog", "cat", "photo", "the", "a", "of", "red", "traffic", "light", "hydrant", "ing", "ed"])



def random_texts(n, seed):
    rng = random.Random(seed)
    texts = []
    while len(texts) < n:
        text = "".join(rng.choice(POOL) for _ in range(rng.randint(0, 40)))
        if not uses_html5_only_name(text):
            texts.append(text)
    return texts


def skip(out, reason):
    (out / "SKIPPED.txt").write_text(reason + "\n")
    print(f"fixtures_tokenizer: skipped: {reason}", flush=True)


def load_sam3_tokenizer(tok_py, vocab):
    """SimpleTokenizer from tokenizer_ve.py alone, with the stand-ins; sys.modules is restored after
    (make_fixtures.py runs every generator in one process)."""
    names = ("ftfy", "iopath", "iopath.common", "iopath.common.file_io")
    saved = {k: sys.modules.get(k) for k in names}
    try:
        ftfy = types.ModuleType("ftfy")
        ftfy.fix_text = lambda text, *a, **k: text
        sys.modules["ftfy"] = ftfy
        if importlib.util.find_spec("iopath") is None:
            for name in names[1:]:
                sys.modules[name] = types.ModuleType(name)
            sys.modules["iopath.common.file_io"].g_pathmgr = types.SimpleNamespace(open=open)
        spec = importlib.util.spec_from_file_location("sam3_tokenizer_ve", tok_py)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.SimpleTokenizer(bpe_path=str(vocab))
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--random", type=int, default=3000, help="number of seeded random texts")
    ap.add_argument("--seed", type=int, default=20240611, help="seed of the random texts")
    args = ap.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "cases.json").unlink(missing_ok=True)
    (out / "SKIPPED.txt").unlink(missing_ok=True)

    sam3_src = os.environ.get("SAM3_SRC", "")
    tok_py = pathlib.Path(sam3_src) / "sam3" / "model" / "tokenizer_ve.py"
    vocab = pathlib.Path(sam3_src) / "sam3" / "assets" / "bpe_simple_vocab_16e6.txt.gz"
    if not sam3_src or not tok_py.is_file() or not vocab.is_file():
        return skip(out, f"SAM3_SRC={sam3_src!r} does not hold sam3/model/tokenizer_ve.py and "
                    "sam3/assets/bpe_simple_vocab_16e6.txt.gz (set SAM3_SRC to SAM3's src/ directory)")
    for module, package in (("regex", "python3-regex"), ("torch", "python3-torch")):
        if importlib.util.find_spec(module) is None:
            return skip(out, f"the Python module {module} is missing ({package}; scripts/install_deps.sh)")
    import regex

    tok = load_sam3_tokenizer(tok_py, vocab)
    texts = dict(FIXED, cased=cased_texts(), classes=class_texts(regex),
                 random=random_texts(args.random, args.seed))
    cases = []
    for kind, group in texts.items():
        for text in group:
            assert not uses_html5_only_name(text), text
            cases.append({"kind": kind, "text": text, "clean": tok.clean_fn(text), "encode": tok.encode(text),
                          "tokens": tok([text], context_length=CONTEXT)[0].tolist()})
    rng = random.Random(args.seed + 1)
    decode = []
    for n in range(300):
        if n < 100:  # byte symbols only: splits and joins UTF-8 sequences
            ids = [rng.randrange(512) for _ in range(rng.randint(1, 8))]
        else:
            ids = [rng.randrange(tok.vocab_size) for _ in range(rng.randint(0, 12))]
        decode.append({"ids": ids, "text": tok.decode(ids)})

    (out / "cases.json").write_text(json.dumps(
        {"vocab": str(vocab), "context_length": CONTEXT, "ftfy": "identity", "cases": cases, "decode": decode}))
    cut = sum(1 for c in cases if len(c["encode"]) + 2 > CONTEXT)
    print(f"fixtures_tokenizer: {len(cases)} texts ({cut} cut at {CONTEXT}), {len(decode)} decodes", flush=True)


if __name__ == "__main__":
    main()
