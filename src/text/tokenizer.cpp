#include "instinct/text/tokenizer.h"

#include <unicode/uchar.h>
#include <unicode/ustring.h>
#include <unicode/utf16.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string_view>
#include <unordered_map>

#include "instinct/common/error.h"

namespace instinct::text {
namespace {

constexpr int kNumMerges = 49152 - 256 - 2;  // the Python keeps merges[1 : 49152 - 256 - 2 + 1]

// ---------------------------------------------------------------- UTF-8

std::string quote_text(std::string_view s) {
  std::string out = "\"";
  size_t n = 0;
  for (unsigned char c : s) {
    if (n++ == 80) {
      out += "...";
      break;
    }
    if (c == '"' || c == '\\') {
      out += '\\';
      out += char(c);
    } else if (c < 0x20 || c >= 0x7F) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02X", c);
      out += buf;
    } else {
      out += char(c);
    }
  }
  return out + "\" (" + std::to_string(s.size()) + " bytes)";
}

// Strict decoding; returns the byte offset of the first invalid sequence, or npos.
size_t utf8_decode(std::string_view s, std::u32string& out) {
  out.clear();
  out.reserve(s.size());
  for (size_t i = 0, n = s.size(); i < n;) {
    const unsigned char c = s[i];
    if (c < 0x80) {
      out += char32_t(c);
      ++i;
      continue;
    }
    size_t len;
    char32_t cp, min;
    if ((c & 0xE0) == 0xC0) len = 2, cp = c & 0x1F, min = 0x80;
    else if ((c & 0xF0) == 0xE0) len = 3, cp = c & 0x0F, min = 0x800;
    else if ((c & 0xF8) == 0xF0) len = 4, cp = c & 0x07, min = 0x10000;
    else return i;
    if (i + len > n) return i;
    for (size_t k = 1; k < len; ++k) {
      const unsigned char d = s[i + k];
      if ((d & 0xC0) != 0x80) return i;
      cp = (cp << 6) | (d & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
    out += cp;
    i += len;
  }
  return std::string_view::npos;
}

void utf8_append(std::string& out, char32_t c) {
  if (c < 0x80) {
    out += char(c);
  } else if (c < 0x800) {
    out += char(0xC0 | (c >> 6));
    out += char(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    out += char(0xE0 | (c >> 12));
    out += char(0x80 | ((c >> 6) & 0x3F));
    out += char(0x80 | (c & 0x3F));
  } else {
    out += char(0xF0 | (c >> 18));
    out += char(0x80 | ((c >> 12) & 0x3F));
    out += char(0x80 | ((c >> 6) & 0x3F));
    out += char(0x80 | (c & 0x3F));
  }
}

std::string utf8_encode(std::u32string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char32_t c : s) utf8_append(out, c);
  return out;
}

// bytes.decode("utf-8", errors="replace"): one U+FFFD per maximal invalid subpart, as CPython.
std::string utf8_repair(std::string_view s) {
  std::string out;
  for (size_t i = 0, n = s.size(); i < n;) {
    const unsigned char c = s[i];
    if (c < 0x80) {
      out += char(c);
      ++i;
      continue;
    }
    size_t len = 0;
    unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c >= 0xE0 && c <= 0xEF) len = 3, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
    else if (c >= 0xF0 && c <= 0xF4) len = 4, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
    size_t k = 1;
    while (len && k < len && i + k < n) {
      const unsigned char d = s[i + k];
      if (d < (k == 1 ? lo : 0x80) || d > (k == 1 ? hi : 0xBF)) break;
      ++k;
    }
    if (len && k == len) out.append(s.substr(i, len));
    else out += "\xEF\xBF\xBD";
    i += len ? k : 1;
  }
  return out;
}

// ---------------------------------------------------------------- character classes

bool is_white(char32_t c) { return u_isUWhiteSpace(UChar32(c)); }                    // regex \s
bool is_py_space(char32_t c) { return is_white(c) || (c >= 0x1C && c <= 0x1F); }     // str.isspace
bool is_letter(char32_t c) { return U_GET_GC_MASK(UChar32(c)) & U_GC_L_MASK; }
bool is_number(char32_t c) { return U_GET_GC_MASK(UChar32(c)) & U_GC_N_MASK; }

enum class Cls { kSkip, kLetter, kNumber, kOther };

Cls classify(char32_t c) {
  if (c < 0x80) {
    if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') return Cls::kLetter;
    if (c >= '0' && c <= '9') return Cls::kNumber;
    return is_white(c) ? Cls::kSkip : Cls::kOther;
  }
  if (is_white(c)) return Cls::kSkip;
  if (is_letter(c)) return Cls::kLetter;
  if (is_number(c)) return Cls::kNumber;
  // Under IGNORECASE the regex module tests a class against every case of a character; U+0345's
  // case partner is the letter U+0399, so it is excluded from [^\s\p{L}\p{N}] but not in [\p{L}].
  return c == 0x345 ? Cls::kSkip : Cls::kOther;
}

// ---------------------------------------------------------------- html.unescape

// HTML 4.01 entities with HTML5's values. U+00A0..U+00FF in order:
constexpr const char* kLatin1Names[] = {
    "nbsp",   "iexcl",  "cent",   "pound",  "curren", "yen",    "brvbar", "sect",   "uml",
    "copy",   "ordf",   "laquo",  "not",    "shy",    "reg",    "macr",   "deg",    "plusmn",
    "sup2",   "sup3",   "acute",  "micro",  "para",   "middot", "cedil",  "sup1",   "ordm",
    "raquo",  "frac14", "frac12", "frac34", "iquest", "Agrave", "Aacute", "Acirc",  "Atilde",
    "Auml",   "Aring",  "AElig",  "Ccedil", "Egrave", "Eacute", "Ecirc",  "Euml",   "Igrave",
    "Iacute", "Icirc",  "Iuml",   "ETH",    "Ntilde", "Ograve", "Oacute", "Ocirc",  "Otilde",
    "Ouml",   "times",  "Oslash", "Ugrave", "Uacute", "Ucirc",  "Uuml",   "Yacute", "THORN",
    "szlig",  "agrave", "aacute", "acirc",  "atilde", "auml",   "aring",  "aelig",  "ccedil",
    "egrave", "eacute", "ecirc",  "euml",   "igrave", "iacute", "icirc",  "iuml",   "eth",
    "ntilde", "ograve", "oacute", "ocirc",  "otilde", "ouml",   "divide", "oslash", "ugrave",
    "uacute", "ucirc",  "uuml",   "yacute", "thorn",  "yuml"};
static_assert(std::size(kLatin1Names) == 96);

struct Entity {
  const char* name;
  char32_t cp;
};
// The rest of HTML 4.01 (markup-significant, Latin extended, punctuation, Greek, symbols), &apos;
// and the legacy upper-case aliases. The first ten are also recognised without ';'.
constexpr Entity kEntities[] = {
    {"amp", 0x26},      {"lt", 0x3C},       {"gt", 0x3E},       {"quot", 0x22},
    {"AMP", 0x26},      {"LT", 0x3C},       {"GT", 0x3E},       {"QUOT", 0x22},
    {"COPY", 0xA9},     {"REG", 0xAE},      {"apos", 0x27},     {"OElig", 0x152},
    {"oelig", 0x153},   {"Scaron", 0x160},  {"scaron", 0x161},  {"Yuml", 0x178},
    {"fnof", 0x192},    {"circ", 0x2C6},    {"tilde", 0x2DC},   {"Alpha", 0x391},
    {"Beta", 0x392},    {"Gamma", 0x393},   {"Delta", 0x394},   {"Epsilon", 0x395},
    {"Zeta", 0x396},    {"Eta", 0x397},     {"Theta", 0x398},   {"Iota", 0x399},
    {"Kappa", 0x39A},   {"Lambda", 0x39B},  {"Mu", 0x39C},      {"Nu", 0x39D},
    {"Xi", 0x39E},      {"Omicron", 0x39F}, {"Pi", 0x3A0},      {"Rho", 0x3A1},
    {"Sigma", 0x3A3},   {"Tau", 0x3A4},     {"Upsilon", 0x3A5}, {"Phi", 0x3A6},
    {"Chi", 0x3A7},     {"Psi", 0x3A8},     {"Omega", 0x3A9},   {"alpha", 0x3B1},
    {"beta", 0x3B2},    {"gamma", 0x3B3},   {"delta", 0x3B4},   {"epsilon", 0x3B5},
    {"zeta", 0x3B6},    {"eta", 0x3B7},     {"theta", 0x3B8},   {"iota", 0x3B9},
    {"kappa", 0x3BA},   {"lambda", 0x3BB},  {"mu", 0x3BC},      {"nu", 0x3BD},
    {"xi", 0x3BE},      {"omicron", 0x3BF}, {"pi", 0x3C0},      {"rho", 0x3C1},
    {"sigmaf", 0x3C2},  {"sigma", 0x3C3},   {"tau", 0x3C4},     {"upsilon", 0x3C5},
    {"phi", 0x3C6},     {"chi", 0x3C7},     {"psi", 0x3C8},     {"omega", 0x3C9},
    {"thetasym", 0x3D1}, {"upsih", 0x3D2},  {"piv", 0x3D6},     {"ensp", 0x2002},
    {"emsp", 0x2003},   {"thinsp", 0x2009}, {"zwnj", 0x200C},   {"zwj", 0x200D},
    {"lrm", 0x200E},    {"rlm", 0x200F},    {"ndash", 0x2013},  {"mdash", 0x2014},
    {"lsquo", 0x2018},  {"rsquo", 0x2019},  {"sbquo", 0x201A},  {"ldquo", 0x201C},
    {"rdquo", 0x201D},  {"bdquo", 0x201E},  {"dagger", 0x2020}, {"Dagger", 0x2021},
    {"bull", 0x2022},   {"hellip", 0x2026}, {"permil", 0x2030}, {"prime", 0x2032},
    {"Prime", 0x2033},  {"lsaquo", 0x2039}, {"rsaquo", 0x203A}, {"oline", 0x203E},
    {"frasl", 0x2044},  {"euro", 0x20AC},   {"image", 0x2111},  {"weierp", 0x2118},
    {"real", 0x211C},   {"trade", 0x2122},  {"alefsym", 0x2135}, {"larr", 0x2190},
    {"uarr", 0x2191},   {"rarr", 0x2192},   {"darr", 0x2193},   {"harr", 0x2194},
    {"crarr", 0x21B5},  {"lArr", 0x21D0},   {"uArr", 0x21D1},   {"rArr", 0x21D2},
    {"dArr", 0x21D3},   {"hArr", 0x21D4},   {"forall", 0x2200}, {"part", 0x2202},
    {"exist", 0x2203},  {"empty", 0x2205},  {"nabla", 0x2207},  {"isin", 0x2208},
    {"notin", 0x2209},  {"ni", 0x220B},     {"prod", 0x220F},   {"sum", 0x2211},
    {"minus", 0x2212},  {"lowast", 0x2217}, {"radic", 0x221A},  {"prop", 0x221D},
    {"infin", 0x221E},  {"ang", 0x2220},    {"and", 0x2227},    {"or", 0x2228},
    {"cap", 0x2229},    {"cup", 0x222A},    {"int", 0x222B},    {"there4", 0x2234},
    {"sim", 0x223C},    {"cong", 0x2245},   {"asymp", 0x2248},  {"ne", 0x2260},
    {"equiv", 0x2261},  {"le", 0x2264},     {"ge", 0x2265},     {"sub", 0x2282},
    {"sup", 0x2283},    {"nsub", 0x2284},   {"sube", 0x2286},   {"supe", 0x2287},
    {"oplus", 0x2295},  {"otimes", 0x2297}, {"perp", 0x22A5},   {"sdot", 0x22C5},
    {"lceil", 0x2308},  {"rceil", 0x2309},  {"lfloor", 0x230A}, {"rfloor", 0x230B},
    {"lang", 0x27E8},   {"rang", 0x27E9},   {"loz", 0x25CA},    {"spades", 0x2660},
    {"clubs", 0x2663},  {"hearts", 0x2665}, {"diams", 0x2666}};
constexpr size_t kNumLegacyEntities = 10;

struct EntityValue {
  char32_t cp;
  bool legacy;  // also valid without the ';'
};

const std::unordered_map<std::string, EntityValue>& entity_table() {
  static const auto* table = [] {
    auto* t = new std::unordered_map<std::string, EntityValue>();
    for (size_t i = 0; i < std::size(kLatin1Names); ++i) (*t)[kLatin1Names[i]] = {char32_t(0xA0 + i), true};
    for (size_t i = 0; i < std::size(kEntities); ++i)
      (*t)[kEntities[i].name] = {kEntities[i].cp, i < kNumLegacyEntities};
    return t;
  }();
  return *table;
}

// Windows-1252 for &#128;..&#159; (0 where the code point itself is kept).
constexpr char16_t kCp1252[32] = {0x20AC, 0,      0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021,
                                  0x02C6, 0x2030, 0x0160, 0x2039, 0x0152, 0,      0x017D, 0,
                                  0,      0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014,
                                  0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0,      0x017E, 0x0178};

void append_numeric_ref(std::u32string& out, uint32_t num) {
  if (num > 0x10FFFF || (num >= 0xD800 && num <= 0xDFFF) || num == 0) {
    out += U'\uFFFD';
  } else if (num == 0x0D) {
    out += U'\r';
  } else if (num >= 0x80 && num <= 0x9F) {
    out += kCp1252[num - 0x80] ? char32_t(kCp1252[num - 0x80]) : char32_t(num);
  } else if ((num >= 0x1 && num <= 0x8) || num == 0xB || (num >= 0xE && num <= 0x1F) || num == 0x7F ||
             (num >= 0xFDD0 && num <= 0xFDEF) || (num & 0xFFFE) == 0xFFFE) {
    // dropped
  } else {
    out += char32_t(num);
  }
}

// Value of an ASCII digit in base 10 or 16, or -1.
int digit_value(char32_t c, bool hex) {
  if (c >= '0' && c <= '9') return int(c - '0');
  if (hex && (c | 0x20) >= 'a' && (c | 0x20) <= 'f') return int((c | 0x20) - 'a' + 10);
  return -1;
}

// The entity for `name` (ASCII, with or without a trailing ';'), if any.
const EntityValue* find_entity(std::u32string_view name) {
  const bool semi = !name.empty() && name.back() == ';';
  std::string key;
  for (size_t i = 0; i < name.size() - semi; ++i) {
    if (name[i] >= 0x80) return nullptr;
    key += char(name[i]);
  }
  const auto& table = entity_table();
  const auto it = table.find(key);
  if (it == table.end() || (!semi && !it->second.legacy)) return nullptr;
  return &it->second;
}

// Python's html.unescape: &(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)
std::u32string html_unescape(const std::u32string& in) {
  if (in.find(U'&') == std::u32string::npos) return in;
  std::u32string out;
  out.reserve(in.size());
  const size_t n = in.size();
  for (size_t i = 0; i < n;) {
    if (in[i] != U'&') {
      out += in[i++];
      continue;
    }
    size_t j = i + 1;
    if (j < n && in[j] == U'#') {
      const bool hex = j + 2 < n && (in[j + 1] == U'x' || in[j + 1] == U'X') && digit_value(in[j + 2], true) >= 0;
      const bool dec = j + 1 < n && digit_value(in[j + 1], false) >= 0;
      if (!hex && !dec) {
        out += in[i++];
        continue;
      }
      size_t k = j + (hex ? 2 : 1);
      uint32_t num = 0;  // saturates at 0x110000: any larger value gives U+FFFD as well
      for (int d; k < n && (d = digit_value(in[k], hex)) >= 0; ++k)
        num = std::min<uint32_t>(num * (hex ? 16 : 10) + uint32_t(d), 0x110000);
      if (k < n && in[k] == U';') ++k;
      append_numeric_ref(out, num);
      i = k;
      continue;
    }
    size_t k = j;
    while (k < n && k - j < 32 && in[k] != U'\t' && in[k] != U'\n' && in[k] != U'\f' && in[k] != U' ' &&
           in[k] != U'<' && in[k] != U'&' && in[k] != U'#' && in[k] != U';')
      ++k;
    if (k == j) {
      out += in[i++];
      continue;
    }
    if (k < n && in[k] == U';') ++k;
    const std::u32string_view s(in.data() + j, k - j);
    i = k;
    if (const EntityValue* e = find_entity(s)) {
      out += e->cp;
      continue;
    }
    // Longest prefix (at least 2 characters) that is an entity valid without ';'.
    size_t x = s.size() - 1;
    const EntityValue* e = nullptr;
    for (; x >= 2 && !(e = find_entity(s.substr(0, x))); --x) {
    }
    if (e) {
      out += e->cp;
      out += s.substr(x);
    } else {
      out += U'&';
      out += s;
    }
  }
  return out;
}

// ---------------------------------------------------------------- cleaning

std::u32string to_lower(const std::u32string& s) {
  bool ascii = true;
  for (char32_t c : s) ascii = ascii && c < 0x80;
  if (ascii) {
    std::u32string out = s;
    for (char32_t& c : out)
      if (c >= U'A' && c <= U'Z') c += 0x20;
    return out;
  }
  std::u16string src;
  src.reserve(s.size() + 8);
  for (char32_t c : s) {
    UChar buf[2];
    int32_t len = 0;
    U16_APPEND_UNSAFE(buf, len, UChar32(c));
    src.append(reinterpret_cast<const char16_t*>(buf), size_t(len));
  }
  // Full mappings can grow the text (U+0130 -> 2 code points); size is preflighted on overflow.
  std::u16string dst(src.size() + 16, u'\0');
  for (int attempt = 0; attempt < 2; ++attempt) {
    UErrorCode err = U_ZERO_ERROR;
    const int32_t len = u_strToLower(reinterpret_cast<UChar*>(dst.data()), int32_t(dst.size()),
                                     reinterpret_cast<const UChar*>(src.data()), int32_t(src.size()), "",
                                     &err);
    if (err == U_BUFFER_OVERFLOW_ERROR) {
      dst.assign(size_t(len), u'\0');
      continue;
    }
    INSTINCT_ASSERT(U_SUCCESS(err));
    dst.resize(size_t(len));
    break;
  }
  std::u32string out;
  out.reserve(dst.size());
  for (int32_t i = 0, n = int32_t(dst.size()); i < n;) {
    UChar32 c;
    U16_NEXT(dst.data(), i, n, c);
    out += char32_t(c);
  }
  return out;
}

// basic_clean (ftfy as identity), whitespace_clean, lower.
std::u32string clean_text(const std::u32string& raw) {
  const std::u32string t = html_unescape(html_unescape(raw));
  size_t b = 0, e = t.size();
  while (b < e && is_py_space(t[b])) ++b;
  while (e > b && is_py_space(t[e - 1])) --e;
  std::u32string w;
  w.reserve(e - b);
  for (size_t i = b; i < e;) {
    if (!is_white(t[i])) {
      w += t[i++];
      continue;
    }
    w += U' ';
    while (i < e && is_white(t[i])) ++i;
  }
  b = 0, e = w.size();
  while (b < e && is_py_space(w[b])) ++b;
  while (e > b && is_py_space(w[e - 1])) --e;
  return to_lower(w.substr(b, e - b));
}

// The regex matches a literal case-insensitively: for the ASCII letters of the special tokens and
// contractions that means the upper case, and U+017F (long s) for 's'.
bool eq_fold(char32_t c, char lit) {
  if (c == char32_t(lit)) return true;
  if (lit >= 'a' && lit <= 'z' && c == char32_t(lit - 0x20)) return true;
  return lit == 's' && c == 0x17F;
}

size_t match_literal(const std::u32string& t, size_t i, std::string_view lit) {
  if (t.size() - i < lit.size()) return 0;
  for (size_t k = 0; k < lit.size(); ++k)
    if (!eq_fold(t[i + k], lit[k])) return 0;
  return lit.size();
}

}  // namespace

// ---------------------------------------------------------------- vocabulary

struct ClipTokenizer::Vocab {
  struct Merge {
    int32_t rank;
    int32_t merged;
  };
  std::vector<std::string> tokens;  // id -> string (UTF-8, byte-mapped alphabet)
  int32_t byte_id[256];             // id of a byte's symbol; +256 with "</w>"
  int32_t byte_of_char[324];        // inverse of the byte mapping (code point -> byte)
  std::unordered_map<uint64_t, Merge> merges;

  static uint64_t key(int32_t a, int32_t b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }

  void bpe(std::string_view bytes, std::vector<int64_t>& out) const {
    std::vector<int32_t> w;
    w.reserve(bytes.size());
    for (unsigned char b : bytes) w.push_back(byte_id[b]);
    w.back() += 256;
    while (w.size() > 1) {
      Merge best{INT32_MAX, 0};
      int32_t left = 0, right = 0;
      for (size_t k = 0; k + 1 < w.size(); ++k) {
        const auto it = merges.find(key(w[k], w[k + 1]));
        if (it != merges.end() && it->second.rank < best.rank) best = it->second, left = w[k], right = w[k + 1];
      }
      if (best.rank == INT32_MAX) break;
      size_t o = 0;
      for (size_t k = 0; k < w.size();) {
        if (k + 1 < w.size() && w[k] == left && w[k + 1] == right) {
          w[o++] = best.merged;
          k += 2;
        } else {
          w[o++] = w[k++];
        }
      }
      w.resize(o);
    }
    out.insert(out.end(), w.begin(), w.end());
  }

  void encode_clean(const std::u32string& t, std::vector<int64_t>& out) const {
    std::string bytes;
    const auto emit = [&](size_t b, size_t e) {
      bytes.clear();
      for (size_t k = b; k < e; ++k) utf8_append(bytes, t[k]);
      bpe(bytes, out);
    };
    for (size_t i = 0, n = t.size(); i < n;) {
      size_t len;
      if ((len = match_literal(t, i, "<start_of_text>")) || (len = match_literal(t, i, "<end_of_text>"))) {
        // Only the exact spelling hits the Python's cache of special tokens.
        const std::u32string_view s(t.data() + i, len);
        if (s == U"<start_of_text>") out.push_back(kSot);
        else if (s == U"<end_of_text>") out.push_back(kEot);
        else emit(i, i + len);
        i += len;
        continue;
      }
      if (t[i] == U'\'') {
        for (const char* c : {"'s", "'t", "'re", "'ve", "'m", "'ll", "'d"})
          if ((len = match_literal(t, i, c))) break;
        if (len) {
          emit(i, i + len);
          i += len;
          continue;
        }
      }
      const Cls cls = classify(t[i]);
      if (cls == Cls::kSkip) {
        ++i;
        continue;
      }
      size_t e = i + 1;
      if (cls != Cls::kNumber)
        while (e < n && classify(t[e]) == cls) ++e;
      emit(i, e);
      i = e;
    }
  }
};

namespace {

std::string read_gzip(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  INSTINCT_CHECK(fs::exists(path, ec), "tokenizer vocabulary ", path, ": no such file");
  INSTINCT_CHECK(fs::is_regular_file(path, ec), "tokenizer vocabulary ", path, ": not a regular file");
  std::ifstream f(path, std::ios::binary);
  INSTINCT_CHECK(f.good(), "tokenizer vocabulary ", path, ": cannot open (", std::strerror(errno), ")");
  const std::string gz((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  INSTINCT_CHECK(!f.bad(), "tokenizer vocabulary ", path, ": read error");
  INSTINCT_CHECK(gz.size() >= 2 && uint8_t(gz[0]) == 0x1F && uint8_t(gz[1]) == 0x8B, "tokenizer vocabulary ",
                 path, ": not a gzip file (expected bpe_simple_vocab_16e6.txt.gz)");
  std::string out;
  z_stream zs{};
  INSTINCT_ASSERT(inflateInit2(&zs, 16 + MAX_WBITS) == Z_OK);
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(gz.data()));
  zs.avail_in = uInt(gz.size());
  char buf[1 << 16];
  int rc = Z_OK;
  while (true) {
    zs.next_out = reinterpret_cast<Bytef*>(buf);
    zs.avail_out = sizeof buf;
    rc = inflate(&zs, Z_NO_FLUSH);
    out.append(buf, sizeof buf - zs.avail_out);
    if (rc == Z_STREAM_END) {
      if (zs.avail_in == 0) break;
      inflateReset(&zs);  // another gzip member follows
      continue;
    }
    if (rc != Z_OK || (zs.avail_in == 0 && zs.avail_out != 0)) break;
  }
  const std::string msg = zs.msg ? zs.msg : "";
  inflateEnd(&zs);
  if (rc != Z_STREAM_END) {
    if (rc == Z_OK || rc == Z_BUF_ERROR)
      fail("tokenizer vocabulary ", path, ": truncated gzip data (", gz.size(), " bytes)");
    fail("tokenizer vocabulary ", path, ": corrupt gzip data (",
         msg.empty() ? "zlib error " + std::to_string(rc) : msg, ")");
  }
  return out;
}

// GPT-2's reversible byte -> printable code point map (bytes_to_unicode).
void byte_alphabet(char32_t (&chars)[256], int32_t (&order)[256]) {
  int32_t next_id = 0;
  bool printable[256] = {};
  for (int b = 0; b < 256; ++b)
    printable[b] = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
  for (int b = 0; b < 256; ++b)
    if (printable[b]) chars[b] = char32_t(b), order[b] = next_id++;
  int32_t extra = 0;
  for (int b = 0; b < 256; ++b)
    if (!printable[b]) chars[b] = char32_t(256 + extra++), order[b] = next_id++;
}

}  // namespace

ClipTokenizer::ClipTokenizer(std::shared_ptr<const Vocab> vocab) : vocab_(std::move(vocab)) {}

ClipTokenizer ClipTokenizer::load(const std::string& vocab_gz_path) {
  const std::string text = read_gzip(vocab_gz_path);
  std::u32string unused;
  const size_t bad = utf8_decode(text, unused);
  INSTINCT_CHECK(bad == std::string_view::npos, "tokenizer vocabulary ", vocab_gz_path,
                 ": not UTF-8 text (invalid byte at offset ", bad, ")");
  unused.clear();
  unused.shrink_to_fit();

  auto v = std::make_shared<Vocab>();
  char32_t chars[256];
  int32_t order[256];
  byte_alphabet(chars, order);
  v->tokens.resize(size_t(kVocabSize));
  std::fill(std::begin(v->byte_of_char), std::end(v->byte_of_char), -1);
  for (int b = 0; b < 256; ++b) {
    v->byte_id[b] = order[b];
    v->byte_of_char[chars[b]] = b;
    std::string s;
    utf8_append(s, chars[b]);
    v->tokens[size_t(order[b])] = s;
    v->tokens[size_t(order[b]) + 256] = s + "</w>";
  }

  std::vector<std::pair<std::string_view, std::string_view>> pairs;
  pairs.reserve(kNumMerges);
  size_t pos = text.find('\n');  // line 0 is a version header
  for (int line = 1; line <= kNumMerges; ++line) {
    INSTINCT_CHECK(pos != std::string::npos && pos + 1 < text.size(), "tokenizer vocabulary ", vocab_gz_path,
                   ": only ", line - 1,
                   " merge lines, expected at least ", kNumMerges);
    const size_t b = pos + 1;
    pos = text.find('\n', b);
    std::string_view l(text.data() + b, (pos == std::string::npos ? text.size() : pos) - b);
    std::vector<std::string_view> parts;
    for (size_t i = 0; i < l.size();) {
      const size_t s = l.find_first_not_of(" \t\r\v\f", i);
      if (s == std::string_view::npos) break;
      const size_t e = std::min(l.find_first_of(" \t\r\v\f", s), l.size());
      parts.push_back(l.substr(s, e - s));
      i = e;
    }
    INSTINCT_CHECK(parts.size() == 2, "tokenizer vocabulary ", vocab_gz_path, ": line ", line + 1, " is ",
                   quote_text(l), ", expected two symbols 'left right'");
    pairs.emplace_back(parts[0], parts[1]);
    v->tokens[size_t(512 + line - 1)] = std::string(parts[0]) + std::string(parts[1]);
  }
  v->tokens[size_t(kSot)] = "<start_of_text>";
  v->tokens[size_t(kEot)] = "<end_of_text>";

  std::unordered_map<std::string_view, int32_t> ids;
  ids.reserve(v->tokens.size());
  for (size_t i = 0; i < v->tokens.size(); ++i)
    INSTINCT_CHECK(ids.emplace(v->tokens[i], int32_t(i)).second, "tokenizer vocabulary ", vocab_gz_path,
                   ": token ", quote_text(v->tokens[i]), " occurs twice (id ", i, ")");
  v->merges.reserve(pairs.size());
  for (size_t r = 0; r < pairs.size(); ++r) {
    const auto a = ids.find(pairs[r].first), b = ids.find(pairs[r].second);
    INSTINCT_CHECK(a != ids.end() && b != ids.end(), "tokenizer vocabulary ", vocab_gz_path, ": line ", r + 2,
                   " merges a symbol that is not a token");
    v->merges[Vocab::key(a->second, b->second)] = {int32_t(r), int32_t(512 + r)};
  }
  return ClipTokenizer(std::move(v));
}

namespace {
std::u32string decode_input(const std::string& text, const char* what) {
  std::u32string cps;
  const size_t bad = utf8_decode(text, cps);
  INSTINCT_CHECK(bad == std::string_view::npos, what, ": text ", quote_text(text),
                 " is not valid UTF-8 (byte offset ", bad, ")");
  return cps;
}
}  // namespace

std::vector<int64_t> ClipTokenizer::encode(const std::string& text) const {
  std::vector<int64_t> ids;
  vocab_->encode_clean(clean_text(decode_input(text, "ClipTokenizer::encode")), ids);
  return ids;
}

std::vector<int64_t> ClipTokenizer::tokenize(const std::string& text, int context_length) const {
  INSTINCT_CHECK(context_length >= 1, "ClipTokenizer::tokenize: context_length ", context_length,
                 ", expected >= 1 (SAM3 uses ", kSam3ContextLength, ")");
  std::vector<int64_t> ids{kSot};
  vocab_->encode_clean(clean_text(decode_input(text, "ClipTokenizer::tokenize")), ids);
  ids.push_back(kEot);
  if (ids.size() > size_t(context_length)) {
    ids.resize(size_t(context_length));
    ids.back() = kEot;
  }
  ids.resize(size_t(context_length), 0);
  return ids;
}

std::vector<int64_t> ClipTokenizer::tokenize_batch(const std::vector<std::string>& texts,
                                                   int context_length) const {
  std::vector<int64_t> out;
  out.reserve(texts.size() * size_t(std::max(context_length, 0)));
  for (size_t i = 0; i < texts.size(); ++i) {
    try {
      const auto row = tokenize(texts[i], context_length);
      out.insert(out.end(), row.begin(), row.end());
    } catch (const Error& e) {
      fail("ClipTokenizer::tokenize_batch: text ", i, ": ", e.what());
    }
  }
  return out;
}

std::string ClipTokenizer::clean(const std::string& text) const {
  return utf8_encode(clean_text(decode_input(text, "ClipTokenizer::clean")));
}

std::string ClipTokenizer::token_string(int64_t id) const {
  INSTINCT_CHECK(id >= 0 && id < kVocabSize, "ClipTokenizer: token id ", id, " outside [0, ", kVocabSize, ")");
  return vocab_->tokens[size_t(id)];
}

std::string ClipTokenizer::decode(const std::vector<int64_t>& ids) const {
  std::string bytes;
  std::u32string cps;
  for (int64_t id : ids) {
    utf8_decode(token_string(id), cps);
    for (char32_t c : cps) bytes += char(vocab_->byte_of_char[c]);
  }
  std::string text = utf8_repair(bytes), out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    if (text.compare(i, 4, "</w>") == 0) {
      out += ' ';
      i += 4;
    } else {
      out += text[i++];
    }
  }
  return out;
}

}  // namespace instinct::text
