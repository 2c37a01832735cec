#pragma once
// A name taken from an untrusted file, made safe for a one-line message.
#include <cstdio>
#include <string>

namespace instinct::io {

/// `s` with control bytes escaped as \xNN, cut to 120 characters ("..." appended when cut).
inline std::string printable(const std::string& s) {
  std::string out;
  for (unsigned char c : s.substr(0, 120)) {
    if (c >= 0x20 && c != 0x7f) {
      out += static_cast<char>(c);
    } else {
      char hex[8];
      std::snprintf(hex, sizeof hex, "\\x%02x", c);
      out += hex;
    }
  }
  return s.size() > 120 ? out + "..." : out;
}

}  // namespace instinct::io
