#pragma once
// On-disk cache of teacher features so the teacher runs once per image across epochs.
//
// Layout of the cache directory:
//   meta.json      identity of what is cached (teacher trunk sha256, preprocessing, dataset size
//                  and a hash of its file list, record shape); a mismatch is an error, never a
//                  silent reuse of stale features;
//   features.f16   fixed-size fp16 records, record i at offset i * C*G*G*2 (a sparse file);
//   valid.bin      one byte per record, set after the record is written.
// Several processes may share one cache on one machine (data-parallel ranks): each writes the
// records of its own images with pwrite; refresh() picks up what the others stored.
#include <ATen/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

namespace instinct::distill {

class FeatureCache {
 public:
  /// Opens or creates the cache in `dir` for `num_records` records of shape (C,G,G). `identity` is
  /// a JSON string; an existing cache with a different identity throws naming the directory.
  FeatureCache(const std::string& dir, const std::string& identity, int64_t num_records, int channels, int grid);
  ~FeatureCache();
  FeatureCache(const FeatureCache&) = delete;
  FeatureCache& operator=(const FeatureCache&) = delete;

  /// True when every index has a stored record.
  bool has_all(const std::vector<int64_t>& indices) const;
  /// Reads records into a new float32 (N,C,G,G) CPU tensor; `count` adds them to hits().
  at::Tensor read(const std::vector<int64_t>& indices, bool count = true) const;
  /// Stores features (N,C,G,G) (any device/dtype) for those of the given indices not stored yet and
  /// returns how many were: a record is written once, so every later read (this run's or another's)
  /// sees the value the filling run trained on, even when a batch mixing stored and new images ran
  /// the teacher again (its batched results differ in the last bits with the batch's composition).
  int64_t write(const std::vector<int64_t>& indices, const at::Tensor& features);
  /// Flushes data and flags to disk.
  void sync();
  /// Re-reads valid.bin: records other processes stored since (data-parallel ranks).
  void refresh();
  int64_t hits() const { return hits_; }
  int64_t stored() const;

 private:
  std::string dir_;
  int fd_data_ = -1, fd_valid_ = -1;
  int64_t n_, record_elems_;
  std::vector<uint8_t> valid_;
  mutable int64_t hits_ = 0;
};

}  // namespace instinct::distill
