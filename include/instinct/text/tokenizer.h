#pragma once
// CLIP byte-level BPE tokenizer, reproducing SAM3's Python `SimpleTokenizer`
// (sam3/model/tokenizer_ve.py, clean="lower") id for id, as SAM3's text encoder calls it:
// `tokenizer(texts, context_length=32)`.
//
// Pipeline (each step as the Python does it, on Unicode code points):
//  1. the input is UTF-8; invalid UTF-8 (overlong forms, surrogates, truncated sequences, code points
//     above U+10FFFF) is rejected;
//  2. ftfy.fix_text: NOT reproduced (identity). Python with the real ftfy differs on text that ftfy
//     changes: mojibake ("cafÃ©"), and also its other default fixes: curly quotes (’ “ ” -> ' "),
//     Latin ligatures (ﬁ -> fi), fullwidth forms (ＡＢＣ -> ABC), NFC normalisation of decomposed
//     accents, control characters and terminal escapes removed. Plain prompts are unaffected;
//  3. html.unescape, twice. Numeric references (&#NNN; &#xHH;, with or without ';') follow Python
//     exactly: Windows-1252 remapping of &#128;-&#159;, U+FFFD for 0 / surrogates / > U+10FFFF,
//     control and non-character code points dropped. Named references: the HTML 4.01 set (252 names:
//     &amp; &lt; &gt; &quot; &nbsp; &copy; &eacute; &alpha; &hellip; &euro; ...), &apos;, and the
//     upper-case aliases &AMP; &LT; &GT; &QUOT; &COPY; &REG;, with HTML5's values (&lang; is U+27E8).
//     The 106 names that HTML5 also accepts without ';' (&amp &lt &nbsp &eacute ...) are all in this
//     set, so unterminated references and Python's longest-prefix rule (&notit; -> ¬it;) match too.
//     Not reproduced: the ~1870 HTML5-only names (&bigstar; &NewLine; &check; ...), which we leave as
//     text (or, like Python for unknown names, replace their longest legacy prefix: &notinva; ->
//     ¬inva; where Python gives ∉);
//  4. strip (Python str.isspace: Unicode White_Space plus U+001C-U+001F), runs of White_Space ->
//     one ' ', strip;
//  5. lower-casing as Python's str.lower (full Unicode mappings: 'İ' -> "i̇", final sigma);
//  6. pre-tokenisation as SAM3's regex (`<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|
//     [\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+`, IGNORECASE, so "'ſ" is the contraction 's), with the
//     regex module's quirk that U+0345 (combining ypogegrammeni) matches no branch and is dropped;
//  7. UTF-8 bytes -> printable code points (GPT-2 byte mapping), BPE with the vocabulary's merge
//     ranks, "</w>" end-of-word marker; a literal "<start_of_text>" / "<end_of_text>" in the text is
//     the special id itself, as in Python.
// Unicode properties and case mappings come from ICU (Unicode 15.0 in Debian bookworm's ICU 72; equal,
// for every code point, to what Python 3.11's str.lower and the regex module use).
//
// A ClipTokenizer is immutable after load(): encode/tokenize are const, cache-free and safe to call
// from several threads at once. Copies share the vocabulary.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace instinct::text {

class ClipTokenizer {
 public:
  /// <start_of_text> and <end_of_text> ids (the last two of the 49408-entry vocabulary).
  static constexpr int64_t kSot = 49406;
  static constexpr int64_t kEot = 49407;
  /// Vocabulary size: 256 byte symbols, the same with "</w>", 48894 merges, 2 special tokens.
  static constexpr int64_t kVocabSize = 49408;
  /// SAM3's text encoder context (`VETextEncoder(context_length=32)`).
  static constexpr int kSam3ContextLength = 32;

  /// Reads the gzip-compressed merges file (SAM3's `sam3/assets/bpe_simple_vocab_16e6.txt.gz`):
  /// a header line, then one "left right" merge per line in rank order; the first 48894 are used.
  /// Throws instinct::Error naming the file when it is missing or unreadable, not gzip, truncated
  /// or corrupt (CRC), not UTF-8, or has fewer merges or a malformed merge line (line number given).
  static ClipTokenizer load(const std::string& vocab_gz_path);

  /// Raw BPE ids of `text` (UTF-8), without <start_of_text> / <end_of_text>, not cut: SimpleTokenizer
  /// .encode(text). Empty or all-whitespace text gives an empty vector. Throws instinct::Error
  /// quoting the text (escaped, shortened) and the byte offset when it is not valid UTF-8.
  std::vector<int64_t> encode(const std::string& text) const;

  /// `context_length` ids as SAM3 feeds its text encoder: kSot, encode(text), kEot, then zeros.
  /// Longer sequences are cut to `context_length` with the last id replaced by kEot, so kEot always
  /// ends the row (for context_length 1 the row is just kEot, as in Python).
  /// Throws instinct::Error for context_length < 1 and for invalid UTF-8.
  std::vector<int64_t> tokenize(const std::string& text, int context_length = kSam3ContextLength) const;

  /// tokenize() for each text, as one row-major (texts.size(), context_length) buffer: row i is
  /// tokenize(texts[i], context_length); `torch::from_blob(v.data(), {n, L}, torch::kLong).clone()`
  /// gives SAM3's LongTensor. An error names the index of the offending text.
  std::vector<int64_t> tokenize_batch(const std::vector<std::string>& texts,
                                      int context_length = kSam3ContextLength) const;

  /// The text as the Python sees it just before pre-tokenisation (steps 1-5 above), UTF-8: useful to
  /// explain an encoding. Same errors as encode().
  std::string clean(const std::string& text) const;

  /// Vocabulary string of an id, in the byte-mapped alphabet with "</w>" (e.g. encode("dog") is
  /// {1929} and token_string(1929) is "dog</w>"). Throws instinct::Error for ids outside
  /// [0, kVocabSize).
  std::string token_string(int64_t id) const;

  /// Inverse of encode() up to the cleaning: the UTF-8 text of `ids` with "</w>" as a space,
  /// invalid UTF-8 replaced by U+FFFD (SimpleTokenizer.decode). Throws for out-of-range ids.
  std::string decode(const std::vector<int64_t>& ids) const;

 private:
  struct Vocab;
  explicit ClipTokenizer(std::shared_ptr<const Vocab> vocab);
  std::shared_ptr<const Vocab> vocab_;
};

}  // namespace instinct::text
