#include "distill/feature_cache.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "instinct/common/error.h"
#include "instinct/io/atomic_file.h"

namespace instinct::distill {
namespace fs = std::filesystem;

FeatureCache::FeatureCache(const std::string& dir, const std::string& identity, int64_t n, int c, int g)
    : dir_(dir), n_(n), record_elems_(int64_t(c) * g * g), valid_(size_t(n), 0) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  INSTINCT_CHECK(!ec, "cache.dir '", dir, "' cannot be created: ", ec.message());
  const std::string meta = dir + "/meta.json";
  if (fs::exists(meta)) {
    std::ifstream f(meta);
    std::stringstream ss;
    ss << f.rdbuf();
    std::string have = ss.str();
    while (!have.empty() && (have.back() == '\n' || have.back() == ' ')) have.pop_back();
    INSTINCT_CHECK(have == identity, "cache.dir '", dir,
                   "' holds features of a different teacher/preprocessing/dataset (meta.json differs); "
                   "use another cache.dir or delete it");
  } else {
    io::write_file_atomic(meta, identity + "\n");
  }
  fd_data_ = ::open((dir + "/features.f16").c_str(), O_RDWR | O_CREAT, 0644);
  fd_valid_ = ::open((dir + "/valid.bin").c_str(), O_RDWR | O_CREAT, 0644);
  INSTINCT_CHECK(fd_data_ >= 0 && fd_valid_ >= 0, "cache.dir '", dir, "': cannot open cache files");
  INSTINCT_CHECK(::ftruncate(fd_data_, n_ * record_elems_ * 2) == 0 && ::ftruncate(fd_valid_, n_) == 0,
                 "cache.dir '", dir, "': cannot size cache files (disk full?)");
  INSTINCT_CHECK(::pread(fd_valid_, valid_.data(), size_t(n_), 0) == n_, "cache.dir '", dir, "': cannot read valid.bin");
}

FeatureCache::~FeatureCache() {
  if (fd_data_ >= 0) ::close(fd_data_);
  if (fd_valid_ >= 0) ::close(fd_valid_);
}

bool FeatureCache::has_all(const std::vector<int64_t>& idx) const {
  for (auto i : idx)
    if (i < 0 || i >= n_ || !valid_[size_t(i)]) return false;
  return true;
}

at::Tensor FeatureCache::read(const std::vector<int64_t>& idx, bool count) const {
  auto out = torch::empty({int64_t(idx.size()), record_elems_}, torch::kHalf);
  const size_t bytes = size_t(record_elems_) * 2;
  for (size_t k = 0; k < idx.size(); ++k) {
    auto* dst = static_cast<char*>(out[int64_t(k)].data_ptr());
    INSTINCT_CHECK(::pread(fd_data_, dst, bytes, off_t(idx[k]) * off_t(bytes)) == ssize_t(bytes),
                   "cache.dir '", dir_, "': short read of record ", idx[k]);
  }
  if (count) hits_ += int64_t(idx.size());
  return out.to(torch::kFloat);
}

int64_t FeatureCache::write(const std::vector<int64_t>& idx, const at::Tensor& feats) {
  auto h = feats.detach().to(torch::kCPU, torch::kHalf).contiguous().reshape({int64_t(idx.size()), record_elems_});
  const size_t bytes = size_t(record_elems_) * 2;
  int64_t kept = 0;
  for (size_t k = 0; k < idx.size(); ++k) {
    INSTINCT_ASSERT(idx[k] >= 0 && idx[k] < n_);
    if (valid_[size_t(idx[k])]) {
      ++kept;
      continue;
    }
    INSTINCT_CHECK(::pwrite(fd_data_, h[int64_t(k)].data_ptr(), bytes, off_t(idx[k]) * off_t(bytes)) == ssize_t(bytes),
                   "cache.dir '", dir_, "': write failed (disk full?)");
    valid_[size_t(idx[k])] = 1;
    const uint8_t one = 1;
    INSTINCT_CHECK(::pwrite(fd_valid_, &one, 1, off_t(idx[k])) == 1, "cache.dir '", dir_, "': write failed");
  }
  return kept;
}

void FeatureCache::sync() {
  ::fdatasync(fd_data_);
  ::fdatasync(fd_valid_);
}

void FeatureCache::refresh() {
  INSTINCT_CHECK(::pread(fd_valid_, valid_.data(), size_t(n_), 0) == n_, "cache.dir '", dir_, "': cannot read valid.bin");
}

int64_t FeatureCache::stored() const {
  int64_t s = 0;
  for (auto v : valid_) s += v;
  return s;
}

}  // namespace instinct::distill
