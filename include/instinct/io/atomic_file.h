#pragma once
// Crash-safe file replacement: a reader of `path` sees either the old file or the complete new one.
#include <string>

namespace instinct::io {

/// Writes a file atomically. The caller writes the full content to temp_path()
/// (`<path>.tmp.<pid>`, same directory as `path`, so the final rename never crosses file systems),
/// then calls commit(), which fsyncs the temp file, renames it over `path` and fsyncs the directory.
/// If commit() is never called (an exception unwound past it) the destructor removes the temp file,
/// leaving any previous `path` untouched.
class AtomicFile {
 public:
  /// Throws instinct::Error when the parent directory of `path` does not exist.
  explicit AtomicFile(std::string path);
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  /// Removes the temp file unless commit() succeeded; never throws.
  ~AtomicFile();

  /// The final destination.
  const std::string& path() const { return path_; }
  /// Where the content must be written before commit().
  const std::string& temp_path() const { return temp_path_; }
  /// True once commit() has succeeded.
  bool committed() const { return committed_; }

  /// fsync temp file, rename over path(), fsync the directory. Throws instinct::Error (naming the
  /// file and the failing system call) when the temp file is missing or any step fails.
  /// Must be called at most once.
  void commit();

 private:
  std::string path_;
  std::string temp_path_;
  bool committed_ = false;
};

/// Atomically replaces `path` with `bytes` (binary-safe; also used for text).
void write_file_atomic(const std::string& path, const std::string& bytes);

/// The pid in an AtomicFile temporary's name (`<name>.tmp.<pid>`, up to 9 digits), or -1 when the
/// name has no such suffix.
long temp_file_pid(const std::string& temp_path);

/// Whether the writer of an AtomicFile temporary (`<name>.tmp.<pid>`) may still be writing it: its
/// process exists, is not a zombie (a killed writer nobody reaped yet) and started before the file
/// was last modified (otherwise the pid was reused by an unrelated process). False for a name
/// without a pid suffix or a file that does not exist; true for the calling process's own files.
bool temp_writer_alive(const std::string& temp_path);

/// Reads a whole (small) file into a string; throws instinct::Error naming the file if unreadable.
std::string read_file(const std::string& path);

}  // namespace instinct::io
