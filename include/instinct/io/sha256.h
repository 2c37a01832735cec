#pragma once
// SHA-256 (FIPS 180-4), project-owned so bundle/checkpoint integrity checks need no extra library.
// Used by the teacher-bundle loader to verify module files against bundle.json.
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace instinct::io {

/// Incremental SHA-256: update() any number of times with arbitrary chunk sizes, then digest().
///   Sha256 h; h.update(buf, n); ...; std::string hex = h.hex_digest();
class Sha256 {
 public:
  Sha256();
  /// Feeds `n` bytes. Must not be called after digest()/hex_digest() without reset().
  void update(const void* data, std::size_t n);
  void update(std::string_view bytes) { update(bytes.data(), bytes.size()); }
  /// Finishes the hash (pads the message) and returns the 32-byte digest. Further calls return the
  /// same digest.
  std::array<std::uint8_t, 32> digest();
  /// digest() as 64 lower-case hex characters (the format of `sha256sum` and Python's hexdigest()).
  std::string hex_digest();
  /// Starts a new message.
  void reset();

 private:
  void compress(const std::uint8_t* block);
  std::array<std::uint32_t, 8> state_;
  std::array<std::uint8_t, 64> buf_;
  std::size_t buf_len_ = 0;
  std::uint64_t total_len_ = 0;  // bytes
  bool finished_ = false;
  std::array<std::uint8_t, 32> out_{};
};

/// Hex SHA-256 of an in-memory byte string.
std::string sha256_hex(std::string_view bytes);

/// Hex SHA-256 of a file, streamed in 1 MiB chunks (constant memory for multi-GB files).
/// Throws instinct::Error naming the path when it cannot be opened or read.
std::string sha256_file(const std::string& path);

}  // namespace instinct::io
