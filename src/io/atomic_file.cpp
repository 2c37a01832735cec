#include "instinct/io/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "common/fault.h"
#include "instinct/common/error.h"

namespace instinct::io {
namespace {

std::string parent_dir(const std::string& path) {
  auto slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

std::string errno_str() { return std::strerror(errno); }

void fsync_path(const std::string& p, int flags, const std::string& what, const std::string& dest) {
  int fd = ::open(p.c_str(), flags | O_CLOEXEC);
  INSTINCT_CHECK(fd >= 0, dest, ": cannot open ", what, " '", p, "' for fsync: ", errno_str());
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  INSTINCT_CHECK(rc == 0, dest, ": fsync of ", what, " '", p, "' failed: ", std::strerror(err));
}

// Start time (seconds since the epoch) and state letter of a live process, from /proc (Linux).
bool proc_start(long pid, double& start, char& state) {
  std::ifstream stat_file("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat_file, line)) return false;
  const auto close = line.rfind(')');  // the command name may hold spaces and parentheses
  if (close == std::string::npos) return false;
  std::istringstream rest(line.substr(close + 1));
  std::string field;
  rest >> state;
  for (int i = 4; i <= 22 && rest >> field; ++i) {}  // field 22: starttime, clock ticks since boot
  std::ifstream sys("/proc/stat");
  std::string key;
  double btime = -1;
  while (sys >> key) {
    if (key == "btime") { sys >> btime; break; }
    std::getline(sys, line);
  }
  if (btime < 0 || field.empty()) return false;
  start = btime + std::stod(field) / double(::sysconf(_SC_CLK_TCK));
  return true;
}

}  // namespace

long temp_file_pid(const std::string& temp_path) {
  const auto dot = temp_path.rfind(".tmp.");
  if (dot == std::string::npos) return -1;
  const std::string digits = temp_path.substr(dot + 5);
  if (digits.empty() || digits.size() > 9 || digits.find_first_not_of("0123456789") != std::string::npos)
    return -1;
  return std::stol(digits);
}

bool temp_writer_alive(const std::string& temp_path) {
  const long pid = temp_file_pid(temp_path);
  if (pid < 0) return false;
  struct stat st {};
  if (::stat(temp_path.c_str(), &st) != 0) return false;
  if (pid == long(::getpid())) return true;
  if (pid <= 0 || (::kill(pid_t(pid), 0) != 0 && errno == ESRCH)) return false;
  double start = 0;
  char state = '?';
  if (!proc_start(pid, start, state)) return true;  // no /proc: trust kill()
  if (state == 'Z' || state == 'X') return false;
  return start <= double(st.st_mtime) + 1.0;  // btime and ticks round; a second of slack
}

AtomicFile::AtomicFile(std::string path) : path_(std::move(path)) {
  INSTINCT_CHECK(!path_.empty() && path_.back() != '/', "atomic write: invalid output path '", path_,
                 "'; expected a file path");
  struct stat st {};
  std::string dir = parent_dir(path_);
  INSTINCT_CHECK(::stat(dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode), path_,
                 ": cannot write, directory '", dir, "' does not exist");
  temp_path_ = path_ + ".tmp." + std::to_string(::getpid());
}

AtomicFile::~AtomicFile() {
  if (!committed_) ::unlink(temp_path_.c_str());
}

void AtomicFile::commit() {
  INSTINCT_ASSERT(!committed_);
  struct stat st {};
  INSTINCT_CHECK(::stat(temp_path_.c_str(), &st) == 0, path_, ": temp file '", temp_path_,
                 "' was not written before commit");
  fsync_path(temp_path_, O_RDONLY, "temp file", path_);
  fault_point("atomic.commit");
  INSTINCT_CHECK(::rename(temp_path_.c_str(), path_.c_str()) == 0, path_, ": rename from '",
                 temp_path_, "' failed: ", errno_str());
  committed_ = true;
  fsync_path(parent_dir(path_), O_RDONLY | O_DIRECTORY, "directory", path_);
}

void write_file_atomic(const std::string& path, const std::string& bytes) {
  AtomicFile file(path);
  {
    std::ofstream out(file.temp_path(), std::ios::binary | std::ios::trunc);
    INSTINCT_CHECK(out.is_open(), path, ": cannot create '", file.temp_path(), "': ", errno_str());
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    out.close();
    INSTINCT_CHECK(!out.fail(), path, ": writing ", bytes.size(), " bytes to '", file.temp_path(),
                   "' failed: ", errno_str(), " (disk full?)");
  }
  file.commit();
}

std::string read_file(const std::string& path) {
  struct stat st {};
  INSTINCT_CHECK(::stat(path.c_str(), &st) == 0, path, ": cannot read file: ", errno_str());
  INSTINCT_CHECK(!S_ISDIR(st.st_mode), path, ": is a directory, expected a file");
  std::ifstream in(path, std::ios::binary);
  INSTINCT_CHECK(in.is_open(), path, ": cannot open file for reading: ", errno_str());
  std::ostringstream os;
  os << in.rdbuf();
  INSTINCT_CHECK(!in.bad(), path, ": read error");
  return os.str();
}

}  // namespace instinct::io
