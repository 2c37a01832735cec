#pragma once
// Portable deterministic randomness: the same numbers on every platform and standard library
// (std distributions and std::shuffle are implementation-defined). Header-only, torch-free.
#include <cstdint>
#include <utility>
#include <vector>

namespace instinct {

/// SplitMix64: advances `state` and returns the next 64-bit value.
inline uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/// Fisher-Yates shuffle driven by splitmix64 (index = next % remaining; the modulo bias is
/// irrelevant for the small sizes it is used with).
template <class T>
void portable_shuffle(std::vector<T>& v, uint64_t& state) {
  for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[splitmix64(state) % i]);
}

}  // namespace instinct
