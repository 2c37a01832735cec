#pragma once
// Two tiers of errors (see docs/architecture.md):
//  - user errors (bad config, file, input) throw instinct::Error with a one-line message naming the
//    offending file/key/value and what was expected; tools print it and exit non-zero;
//  - internal invariants use INSTINCT_ASSERT, which aborts with file:line (a bug, not bad input).
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <stdexcept>
#include <string>

namespace instinct {

/// A user-facing error: the message is one line and says what was wrong and what was expected.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};

namespace detail {
template <typename... Args>
std::string str_cat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
}  // namespace detail

/// Throws instinct::Error with the streamed arguments concatenated.
template <typename... Args>
[[noreturn]] void fail(const Args&... args) {
  throw Error(detail::str_cat(args...));
}

/// The first line of an exception's message, without LibTorch's C++ backtrace (for one-line errors
/// that wrap a library failure).
std::string error_text(const std::exception& e);

}  // namespace instinct

/// User-error check: INSTINCT_CHECK(cond, "file ", path, ": expected ...").
#define INSTINCT_CHECK(cond, ...)            \
  do {                                       \
    if (!(cond)) ::instinct::fail(__VA_ARGS__); \
  } while (0)

/// Internal invariant: aborts with location; never used for bad user input.
#define INSTINCT_ASSERT(cond)                                                              \
  do {                                                                                     \
    if (!(cond)) {                                                                         \
      std::fprintf(stderr, "internal error: %s:%d: assertion failed: %s\n", __FILE__, __LINE__, \
                   #cond);                                                                 \
      std::abort();                                                                        \
    }                                                                                      \
  } while (0)
