#pragma once
// Shared bits of the libFuzzer harnesses (tests/fuzz/README.md): a per-process scratch directory
// for parsers that read files, and the verdict on exceptions. instinct::Error is the expected
// rejection of a bad input; any other exception escaping a parser is a finding (the tools would
// report it as an "internal error"), so it aborts and libFuzzer saves the input.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <string>
#include <typeinfo>

#include "instinct/common/error.h"

namespace fuzz {

/// A directory under $TMPDIR (or /tmp) private to this process; removed at exit.
inline const std::string& scratch_dir() {
  static const std::string dir = [] {
    const char* t = std::getenv("TMPDIR");
    std::string d = std::string(t && *t ? t : "/tmp") + "/instinct-fuzz-" + std::to_string(::getpid());
    std::string cmd = "mkdir -p '" + d + "'";
    if (std::system(cmd.c_str()) != 0) std::abort();
    static struct Cleanup {
      std::string d;
      ~Cleanup() { std::system(("rm -rf '" + d + "'").c_str()); }
    } cleanup{d};
    return d;
  }();
  return dir;
}

/// Writes `size` bytes to scratch_dir()/name and returns the path.
inline std::string write_file(const std::string& name, const void* data, size_t size) {
  const std::string path = scratch_dir() + "/" + name;
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(static_cast<const char*>(data), static_cast<std::streamsize>(size));
  f.close();
  if (!f) std::abort();
  return path;
}

[[noreturn]] inline void unexpected(const char* what, const char* type) {
  std::fprintf(stderr, "FUZZ FINDING: exception other than instinct::Error escaped the parser: %s: %s\n", type, what);
  std::abort();
}

/// Runs `body`; instinct::Error is a clean rejection, anything else aborts.
template <class F>
void guarded(F&& body) {
  try {
    body();
  } catch (const instinct::Error&) {
  } catch (const std::exception& e) {
    unexpected(e.what(), typeid(e).name());
  } catch (...) {
    unexpected("(not a std::exception)", "unknown");
  }
}

}  // namespace fuzz
