// ClipTokenizer: id-for-id parity with SAM3's Python SimpleTokenizer (fixtures from
// tests/python/fixtures_tokenizer.py, needs $SAM3_SRC), and vocabulary errors, cleaning and
// determinism on a synthetic vocabulary written here.
#include "instinct/text/tokenizer.h"

#include <gtest/gtest.h>
#include <zlib.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "test_helpers.h"

namespace {

using instinct::test::error_of;
using instinct::text::ClipTokenizer;
namespace fs = std::filesystem;

constexpr int kMerges = 48894;

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void write_file(const std::string& path, const std::string& data) {
  std::ofstream(path, std::ios::binary) << data;
}

void write_gz(const std::string& path, const std::string& data) {
  gzFile g = gzopen(path.c_str(), "wb");
  ASSERT_NE(g, nullptr);
  ASSERT_EQ(gzwrite(g, data.data(), unsigned(data.size())), int(data.size()));
  ASSERT_EQ(gzclose(g), Z_OK);
}

// The byte-mapped symbol of byte b (GPT-2 bytes_to_unicode), UTF-8, and its position in the vocabulary.
std::string symbol(int b) {
  const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
  int cp = b;
  if (!printable) {
    cp = 256;
    for (int k = 0; k < b; ++k)
      if (!((k >= '!' && k <= '~') || (k >= 0xA1 && k <= 0xAC) || (k >= 0xAE))) ++cp;
  }
  std::string s;
  if (cp < 0x80) {
    s += char(cp);
  } else {
    s += char(0xC0 | (cp >> 6));
    s += char(0x80 | (cp & 0x3F));
  }
  return s;
}
int64_t order(char c) { return int64_t(c) - '!'; }  // printable ASCII comes first, in byte order

// Header + merges "sym(i) sym(j)" over printable ASCII first, then the rest, in (i, j) order:
// merge rank of (a, b) for printable ASCII a, b is order(a) * 256 + order(b).
std::string synthetic_merges(int lines = kMerges, const std::string& bad_line = "") {
  std::vector<int> bytes;
  for (int b = '!'; b <= '~'; ++b) bytes.push_back(b);
  for (int b = 0; b < 256; ++b)
    if (b < '!' || b > '~') bytes.push_back(b);
  std::string text = "#version: synthetic\n";
  int n = 0;
  for (int i : bytes)
    for (int j : bytes) {
      if (n == lines) return text;
      text += (n == 4 && !bad_line.empty()) ? bad_line : symbol(i) + " " + symbol(j);
      text += '\n';
      ++n;
    }
  return text;
}

const std::string& synthetic_vocab() {
  static const std::string path = [] {
    const std::string p = instinct::test::temp_dir("tokenizer_vocab") + "/synthetic.txt.gz";
    write_gz(p, synthetic_merges());
    return p;
  }();
  return path;
}

int64_t merged(char a, char b) { return 512 + order(a) * 256 + order(b); }

// ------------------------------------------------------------ SAM3 parity

std::string sam3_vocab() {
  const char* src = std::getenv("SAM3_SRC");
  if (!src || !*src || !fs::is_directory(fs::path(src) / "sam3")) return "";
  return (fs::path(src) / "sam3" / "assets" / "bpe_simple_vocab_16e6.txt.gz").string();
}

std::string printable(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7F) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02X", c);
      out += buf;
    } else {
      out += char(c);
    }
  }
  return out;
}

std::string ids_str(const std::vector<int64_t>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

TEST(ClipTokenizer, MatchesSam3Python) {
  const std::string vocab = sam3_vocab();
  if (vocab.empty())
    GTEST_SKIP() << "SAM3_SRC is needed: set it to SAM3's src/ directory (holding sam3/) when generating "
                    "fixtures and running this test";
  const std::string dir = instinct::test::fixture_dir("tokenizer");
  if (!fs::exists(dir + "/cases.json")) {
    FAIL() << dir << "/cases.json is missing: "
           << (fs::exists(dir + "/SKIPPED.txt") ? read_file(dir + "/SKIPPED.txt")
                                                 : "run tests/python/fixtures_tokenizer.py with SAM3_SRC set");
  }
  const auto j = nlohmann::json::parse(read_file(dir + "/cases.json"));
  const auto tok = ClipTokenizer::load(vocab);
  const int L = j.at("context_length").get<int>();
  ASSERT_EQ(L, ClipTokenizer::kSam3ContextLength);

  size_t n = 0, bad = 0, cut = 0;
  std::map<std::string, size_t> per_kind;
  std::vector<std::string> texts;
  std::vector<int64_t> expected_batch;
  for (const auto& c : j.at("cases")) {
    const auto text = c.at("text").get<std::string>();
    const auto clean = c.at("clean").get<std::string>();
    const auto enc = c.at("encode").get<std::vector<int64_t>>();
    const auto toks = c.at("tokens").get<std::vector<int64_t>>();
    ++n;
    ++per_kind[c.at("kind").get<std::string>()];
    cut += enc.size() + 2 > size_t(L);
    texts.push_back(text);
    expected_batch.insert(expected_batch.end(), toks.begin(), toks.end());
    const auto got_clean = tok.clean(text);
    const auto got_enc = tok.encode(text);
    const auto got_toks = tok.tokenize(text, L);
    if (got_clean == clean && got_enc == enc && got_toks == toks) continue;
    if (++bad <= 10)
      ADD_FAILURE() << c.at("kind").get<std::string>() << " text \"" << printable(text) << "\"\n  clean python \""
                    << printable(clean) << "\"\n         c++    \"" << printable(got_clean) << "\"\n  encode python "
                    << ids_str(enc) << "\n         c++    " << ids_str(got_enc) << "\n  tokens python "
                    << ids_str(toks) << "\n         c++    " << ids_str(got_toks);
  }
  EXPECT_EQ(bad, 0u) << "of " << n << " texts";
  std::string kinds;
  for (const auto& [k, count] : per_kind) kinds += " " + k + "=" + std::to_string(count);
  std::printf("[ tokenizer ] %zu texts (%zu cut at %d), %zu differ from SAM3's Python;%s\n", n, cut, L, bad,
              kinds.c_str());
  EXPECT_GE(n, 1000u);
  EXPECT_GT(cut, 10u);
  EXPECT_EQ(tok.tokenize_batch(texts, L), expected_batch);

  size_t nd = 0;
  for (const auto& d : j.at("decode")) {
    const auto ids = d.at("ids").get<std::vector<int64_t>>();
    EXPECT_EQ(tok.decode(ids), d.at("text").get<std::string>()) << ids_str(ids);
    ++nd;
  }
  EXPECT_GT(nd, 100u);
}

TEST(ClipTokenizer, Sam3VocabularyBasics) {
  const std::string vocab = sam3_vocab();
  if (vocab.empty()) GTEST_SKIP() << "SAM3_SRC is needed: set it to SAM3's src/ directory (holding sam3/)";
  const auto tok = ClipTokenizer::load(vocab);
  EXPECT_EQ(tok.token_string(ClipTokenizer::kSot), "<start_of_text>");
  EXPECT_EQ(tok.token_string(ClipTokenizer::kEot), "<end_of_text>");
  const auto dog = tok.encode("dog");
  ASSERT_EQ(dog.size(), 1u);
  EXPECT_EQ(tok.token_string(dog[0]), "dog</w>");
  EXPECT_EQ(tok.decode(tok.encode("A Traffic-Light, 2 dogs!")), "a traffic - light , 2 dogs ! ");
}

// ------------------------------------------------------------ no SAM3 needed

TEST(ClipTokenizer, MissingAndCorruptVocabularies) {
  const std::string dir = instinct::test::temp_dir("tokenizer_errors");
  auto e = error_of([&] { ClipTokenizer::load(dir + "/nope.txt.gz"); });
  EXPECT_TRUE(contains(e, dir + "/nope.txt.gz") && contains(e, "no such file")) << e;
  e = error_of([&] { ClipTokenizer::load(dir); });
  EXPECT_TRUE(contains(e, "not a regular file")) << e;

  write_file(dir + "/plain.txt", synthetic_merges());
  e = error_of([&] { ClipTokenizer::load(dir + "/plain.txt"); });
  EXPECT_TRUE(contains(e, dir + "/plain.txt") && contains(e, "not a gzip file")) << e;

  const std::string gz = read_file(synthetic_vocab());
  write_file(dir + "/truncated.gz", gz.substr(0, gz.size() / 2));
  e = error_of([&] { ClipTokenizer::load(dir + "/truncated.gz"); });
  EXPECT_TRUE(contains(e, dir + "/truncated.gz") && contains(e, "truncated gzip")) << e;

  std::string crc = gz;
  crc[crc.size() - 8] = char(crc[crc.size() - 8] ^ 0x5A);  // CRC-32 of the trailer
  write_file(dir + "/crc.gz", crc);
  e = error_of([&] { ClipTokenizer::load(dir + "/crc.gz"); });
  EXPECT_TRUE(contains(e, dir + "/crc.gz") && contains(e, "corrupt gzip data")) << e;

  std::string garbage = gz;
  for (size_t i = 20; i < 60; ++i) garbage[i] = char(0xFF);
  write_file(dir + "/garbage.gz", garbage);
  e = error_of([&] { ClipTokenizer::load(dir + "/garbage.gz"); });
  EXPECT_TRUE(contains(e, dir + "/garbage.gz") && (contains(e, "corrupt gzip") || contains(e, "truncated"))) << e;

  write_gz(dir + "/short.gz", synthetic_merges(100));
  e = error_of([&] { ClipTokenizer::load(dir + "/short.gz"); });
  EXPECT_TRUE(contains(e, "only 100 merge lines, expected at least 48894")) << e;

  write_gz(dir + "/badline.gz", synthetic_merges(kMerges, "a b c"));
  e = error_of([&] { ClipTokenizer::load(dir + "/badline.gz"); });
  EXPECT_TRUE(contains(e, "line 6 is \"a b c\"") && contains(e, "expected two symbols")) << e;

  write_gz(dir + "/latin1.gz", synthetic_merges() + "\xE9\n");
  e = error_of([&] { ClipTokenizer::load(dir + "/latin1.gz"); });
  EXPECT_TRUE(contains(e, "not UTF-8")) << e;
}

TEST(ClipTokenizer, SyntheticVocabularyBpe) {
  const auto tok = ClipTokenizer::load(synthetic_vocab());
  // d o g</w>: (d,o) is a merge, (o,g</w>) and (do,g</w>) are not.
  EXPECT_EQ(tok.encode("dog"), (std::vector<int64_t>{merged('d', 'o'), 256 + order('g')}));
  EXPECT_EQ(tok.token_string(merged('d', 'o')), "do");
  EXPECT_EQ(tok.token_string(256 + order('g')), "g</w>");
  // (a,a) merges left to right: a a a a a</w> -> aa aa a</w>.
  EXPECT_EQ(tok.encode("aaaaa"), (std::vector<int64_t>{merged('a', 'a'), merged('a', 'a'), 256 + order('a')}));
  // Lowest rank first: (a,b) ranks before (b,c), so "abcd" -> ab c d</w>, not a bc d</w>.
  EXPECT_EQ(tok.encode("abcd"), (std::vector<int64_t>{merged('a', 'b'), order('c'), 256 + order('d')}));
  EXPECT_EQ(tok.encode("x"), (std::vector<int64_t>{256 + order('x')}));
  EXPECT_EQ(tok.encode("  \t\n "), std::vector<int64_t>{});
  EXPECT_EQ(tok.encode(""), std::vector<int64_t>{});
  // Pre-tokenisation: letters, single digits, punctuation runs, contractions, specials.
  EXPECT_EQ(tok.encode("it's"), (std::vector<int64_t>{order('i'), 256 + order('t'), order('\''), 256 + order('s')}));
  EXPECT_EQ(tok.encode("12"), (std::vector<int64_t>{256 + order('1'), 256 + order('2')}));
  EXPECT_EQ(tok.encode("!?"), (std::vector<int64_t>{order('!'), 256 + order('?')}));
  EXPECT_EQ(tok.encode("<start_of_text>x<END_OF_TEXT>"),
            (std::vector<int64_t>{ClipTokenizer::kSot, 256 + order('x'), ClipTokenizer::kEot}));
  EXPECT_EQ(tok.decode(tok.encode("Dog, CAT!")), "dog , cat ! ");
  // Byte 0xC3 (id 94 + 12 + 0xC3 - 0xAE) followed by 'b' is invalid UTF-8: U+FFFD, as Python's decode.
  EXPECT_EQ(tok.decode({order('a'), 94 + 12 + 0xC3 - 0xAE, 256 + order('b')}), "a\xEF\xBF\xBD" "b ");
}

TEST(ClipTokenizer, ContextLengthAndBatch) {
  const auto tok = ClipTokenizer::load(synthetic_vocab());
  const int64_t S = ClipTokenizer::kSot, E = ClipTokenizer::kEot, x = 256 + order('x');
  auto row = tok.tokenize("x");
  ASSERT_EQ(row.size(), 32u);
  EXPECT_EQ(std::vector<int64_t>(row.begin(), row.begin() + 4), (std::vector<int64_t>{S, x, E, 0}));
  EXPECT_EQ(std::count(row.begin(), row.end(), 0), 29);
  EXPECT_EQ(tok.tokenize("", 4), (std::vector<int64_t>{S, E, 0, 0}));
  EXPECT_EQ(tok.tokenize("x x", 4), (std::vector<int64_t>{S, x, x, E}));
  EXPECT_EQ(tok.tokenize("x x x", 4), (std::vector<int64_t>{S, x, x, E}));  // cut: EOT kept last
  EXPECT_EQ(tok.tokenize("x x x x x x", 2), (std::vector<int64_t>{S, E}));
  EXPECT_EQ(tok.tokenize("x", 1), (std::vector<int64_t>{E}));
  std::string many;
  for (int i = 0; i < 40; ++i) many += "x ";
  row = tok.tokenize(many);
  EXPECT_EQ(row.front(), S);
  EXPECT_EQ(row.back(), E);
  EXPECT_EQ(std::count(row.begin(), row.end(), x), 30);
  auto e = error_of([&] { tok.tokenize("x", 0); });
  EXPECT_TRUE(contains(e, "context_length 0")) << e;

  const std::vector<std::string> texts = {"x", "", many, "dog"};
  const auto batch = tok.tokenize_batch(texts, 8);
  ASSERT_EQ(batch.size(), 32u);
  for (size_t i = 0; i < texts.size(); ++i)
    EXPECT_EQ(std::vector<int64_t>(batch.begin() + 8 * i, batch.begin() + 8 * (i + 1)), tok.tokenize(texts[i], 8));
  e = error_of([&] { tok.tokenize_batch({"ok", "bad \xFF"}, 8); });
  EXPECT_TRUE(contains(e, "text 1") && contains(e, "not valid UTF-8")) << e;
}

TEST(ClipTokenizer, CleaningLikePython) {
  const auto tok = ClipTokenizer::load(synthetic_vocab());
  // Expected strings checked against sam3/model/tokenizer_ve.py's clean_fn (ftfy as identity).
  EXPECT_EQ(tok.clean("  A\tDog \n\n and\u00a0A  CAT  "), "a dog and a cat");
  EXPECT_EQ(tok.clean("\x1c" "dog\x1c"), "dog");
  EXPECT_EQ(tok.clean("a\x1c b"), "a\x1c b");
  EXPECT_EQ(tok.clean("&amp;lt;b&amp;gt; &amp;amp;amp;"), "<b> &amp;");
  EXPECT_EQ(tok.clean("&notit; &notin; &ampx &eacute &Eacute; &bogus; &;"), "\u00acit; \u2209 &x \u00e9 \u00e9 &bogus; &;");
  EXPECT_EQ(tok.clean("&#65;&#x42;&#X43 &#128; &#0; &#1;|&#xD800; &#1114112; &#13;"),
            "abc \u20ac \ufffd |\ufffd \ufffd");
  EXPECT_EQ(tok.clean("&lang;&hellip;&euro;&apos;&QUOT;&COPY"), "\u27e8\u2026\u20ac'\"\u00a9");
  EXPECT_EQ(tok.clean("\u039f\u0394\u039f\u03a3 \u03a3\u0391\u03a3."), "\u03bf\u03b4\u03bf\u03c2 \u03c3\u03b1\u03c2.");
  EXPECT_EQ(tok.clean("\u0130STANBUL Stra\u00dfe \u1e9e"), "i\u0307stanbul stra\u00dfe \u00df");
  EXPECT_EQ(tok.clean("\u2003 \u3000dog\u2028"), "dog");

  std::string e = error_of([&] { tok.encode("caf\xC3"); });
  EXPECT_TRUE(contains(e, "\"caf\\xC3\"") && contains(e, "not valid UTF-8") && contains(e, "byte offset 3")) << e;
  for (const char* bad : {"\xC0\xAF", "\xED\xA0\x80", "\xF4\x90\x80\x80", "\x80", "ok\xE2\x82"}) {
    e = error_of([&] { tok.encode(bad); });
    EXPECT_TRUE(contains(e, "not valid UTF-8")) << printable(bad) << ": " << e;
  }
  e = error_of([&] { tok.token_string(ClipTokenizer::kVocabSize); });
  EXPECT_TRUE(contains(e, "49408")) << e;
}

TEST(ClipTokenizer, Deterministic) {
  const auto tok = ClipTokenizer::load(synthetic_vocab());
  const auto again = ClipTokenizer::load(synthetic_vocab());
  const auto copy = tok;
  const std::vector<std::string> texts = {"a photo of a dog", "\u732b\U0001f436 caf\u00e9 &amp; it's",
                                          "\u0130\u03a3\u03a3 x\u0345y", "", "supercalifragilistic 1234"};
  std::vector<std::vector<int64_t>> first;
  for (const auto& t : texts) first.push_back(tok.tokenize(t));
  std::vector<std::thread> threads;
  std::vector<int> ok(4, 1);
  for (int k = 0; k < 4; ++k)
    threads.emplace_back([&, k] {
      for (int rep = 0; rep < 50; ++rep)
        for (size_t i = 0; i < texts.size(); ++i)
          if ((k % 2 ? copy : tok).tokenize(texts[i]) != first[i]) ok[size_t(k)] = 0;
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok, std::vector<int>(4, 1));
  for (size_t i = 0; i < texts.size(); ++i) EXPECT_EQ(again.tokenize(texts[i]), first[i]);
}

}  // namespace
