#pragma once
// Shared helpers for the gtest binary: fixture locations from the ctest environment, temporary
// directories, error messages.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>

#include "instinct/common/error.h"

namespace instinct::test {

/// $INSTINCT_FIXTURES/<sub> (written by tests/python/fixtures_<sub>.py); fails the test when absent.
inline std::string fixture_dir(const std::string& sub) {
  const char* root = std::getenv("INSTINCT_FIXTURES");
  if (!root) ADD_FAILURE() << "INSTINCT_FIXTURES is not set: run the tests through ctest";
  return std::string(root ? root : "/nonexistent") + "/" + sub;
}

/// Skips the calling test when the reference fixture $INSTINCT_FIXTURES/<sub> was not generated because
/// its optional reference source (timm, pycocotools, SAM3) is absent: tests/python/ref_sources.py
/// writes the reason into <sub>/SKIPPED. Use at the top of a test body. Assigns the fixture directory
/// to `dir`.
#define INSTINCT_REFERENCE_FIXTURE_OR_SKIP(dir, sub)                                              \
  do {                                                                                            \
    dir = ::instinct::test::fixture_dir(sub);                                                     \
    /* a nested fixture ("sam3_ref/cgf1") is also skipped when its parent's generator skipped */ \
    std::ifstream skipped_(dir + "/SKIPPED");                                                     \
    if (!skipped_) skipped_.open(std::filesystem::path(dir).parent_path() / "SKIPPED");         \
    if (skipped_) {                                                                               \
      std::string why_;                                                                           \
      std::getline(skipped_, why_);                                                               \
      GTEST_SKIP() << "reference absent: " << why_;                                               \
    }                                                                                             \
  } while (0)

/// A fresh empty temporary directory for one test.
inline std::string temp_dir(const std::string& name) {
  auto p = std::filesystem::temp_directory_path() / ("instinct_test_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(p);
  std::filesystem::create_directories(p);
  return p.string();
}

/// The message of the instinct::Error that `fn` throws, or "<no instinct::Error>".
inline std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const instinct::Error& e) {
    return e.what();
  }
  return "<no instinct::Error>";
}

}  // namespace instinct::test
