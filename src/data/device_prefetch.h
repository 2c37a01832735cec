#pragma once
// Moves loader batches to the training device one batch ahead of use.
//
// On CUDA the next batch's host-to-device copy (from the loader's pinned buffers) is issued on a
// side stream as soon as the current batch is handed out, so it runs while the current step
// computes; the compute stream waits for it (an event, not a host sync) only when that batch is
// handed out, and the batch's device memory is recorded on the compute stream so the caching
// allocator does not reuse it early. On other devices batches are moved when handed out.
// Batches, their order and their content are exactly the loader's.
#include <memory>
#include <optional>

#include "instinct/data/loader.h"

namespace instinct::data {

class DevicePrefetcher {
 public:
  /// `loader` must outlive the prefetcher.
  DevicePrefetcher(Loader& loader, const at::Device& device);
  ~DevicePrefetcher();
  DevicePrefetcher(const DevicePrefetcher&) = delete;
  DevicePrefetcher& operator=(const DevicePrefetcher&) = delete;

  /// Loader::start_epoch; drops the batch fetched ahead.
  void start_epoch(int64_t epoch, int64_t start_batch = 0);
  /// The loader's next batch with `images` (and `valid`) on the device, ready for the current
  /// stream; nullopt at epoch end. Starts the copy of the batch after it.
  std::optional<Batch> next();
  /// Whether copies overlap with compute (a CUDA device).
  bool overlapped() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace instinct::data
