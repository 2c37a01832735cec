#pragma once
// A prefetching thread-pool image loader: dataset indices in, normalised (B,3,S,S) batches out.
//
// Guarantees:
//  - the order of an epoch depends only on (seed, epoch, dataset size, rank, world_size): a
//    Fisher-Yates shuffle driven by a splitmix64 generator (not std::shuffle, whose output is
//    implementation-defined), so it is identical across compilers and machines;
//  - sharding follows torch's DistributedSampler(drop_last=False): the permutation is padded by
//    wrapping around to a multiple of world_size and rank r takes positions r, r+W, r+2W, ... so
//    every sample is seen at least once per epoch over all ranks (and at most
//    ceil(N/W)*W - N samples twice);
//  - batches come out strictly in order and their content never depends on thread timing
//    (per-sample randomness, i.e. hflip, is a hash of (seed, epoch, dataset index));
//  - workers decode straight into one preallocated batch tensor (pinned when asked for and CUDA is
//    available); at most prefetch_batches batches are in flight or ready at any time;
//  - unreadable / corrupt images are skipped (the batch becomes narrower), counted and logged once
//    per path; too many skips, or any other worker exception, surface as an exception from next().
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "instinct/data/dataset.h"
#include "instinct/data/image_ops.h"

namespace instinct::data {

/// Loader behaviour. Sizes are per rank.
struct LoaderConfig {
  /// Samples per batch (before skipped images are removed).
  int batch_size = 8;
  /// Decoding threads (>= 1).
  int num_workers = 2;
  /// Batches in flight or ready ahead of the consumer (>= 1); bounds memory.
  int prefetch_batches = 2;
  /// Shuffle each epoch (false: dataset order, still sharded).
  bool shuffle = true;
  /// Drop the last incomplete batch of an epoch.
  bool drop_last = true;
  /// Seed of the epoch permutation and of per-sample augmentation.
  uint64_t seed = 0;
  /// Allocate batches in page-locked memory when CUDA is available (ignored otherwise).
  bool pin_memory = false;
  /// Largest tolerated skipped/attempted fraction of images; checked after 20 attempts or at
  /// epoch end, over the loader's lifetime.
  double max_bad_fraction = 0.01;
  /// This process's rank in [0, world_size).
  int rank = 0;
  /// Number of ranks sharing each epoch.
  int world_size = 1;
  /// Probability of a horizontal flip per sample (0 disables).
  float hflip_prob = 0;
};

/// One batch. B' <= batch_size samples (fewer when images were skipped).
struct Batch {
  /// (B',3,S,S) float32, normalised.
  at::Tensor images;
  /// (B',S,S) bool, true on image content; undefined for resize == "squash".
  at::Tensor valid;
  /// Dataset index of each row of `images`.
  std::vector<int64_t> indices;
  /// Epoch this batch belongs to.
  int64_t epoch = 0;
  /// Position of the batch in the epoch, in [0, batches_per_epoch()).
  int64_t batch_index = 0;
};

/// The dataset order of one epoch: 0..n-1, shuffled when `shuffle` (deterministic in seed, epoch).
std::vector<int64_t> epoch_permutation(size_t n, uint64_t seed, int64_t epoch, bool shuffle);

/// Rank `rank`'s share of `order` (DistributedSampler semantics: padded by wrapping, strided).
std::vector<int64_t> shard_indices(const std::vector<int64_t>& order, int rank, int world_size);

/// Whether dataset sample `index` is flipped in `epoch` (a pure function of its arguments).
bool sample_hflip(uint64_t seed, int64_t epoch, int64_t index, float prob);

/// Prefetching loader over a Dataset. Not thread-safe: one consumer thread calls start_epoch/next.
class Loader {
 public:
  /// Validates both configs (throws instinct::Error naming the bad field) and starts the workers.
  Loader(std::shared_ptr<const Dataset> dataset, PreprocessConfig preprocess, LoaderConfig config);
  /// Stops and joins the worker threads (in-flight decodes finish first).
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  /// Batches this rank yields per epoch (ignoring skipped images).
  int64_t batches_per_epoch() const;
  /// Samples this rank sees per epoch (after sharding, before drop_last).
  int64_t samples_per_epoch() const;
  /// Starts (or restarts) epoch `epoch` at batch `start_batch` (in [0, batches_per_epoch()]);
  /// batches from a resumed epoch are identical to those of an uninterrupted one. Discards any
  /// prefetched batches of the previous epoch.
  void start_epoch(int64_t epoch, int64_t start_batch = 0);
  /// The next batch of the current epoch, waiting for it if needed; nullopt at epoch end.
  /// Throws instinct::Error when the skipped fraction exceeds max_bad_fraction, rethrows any other
  /// exception raised while loading this batch, and throws if start_epoch() was never called.
  std::optional<Batch> next();
  /// Images skipped as unreadable so far (over all epochs).
  int64_t num_skipped() const;
  /// Images attempted so far, in batches returned by next() (over all epochs).
  int64_t num_attempted() const;
  /// This rank's dataset indices for the current epoch, in batch order.
  const std::vector<int64_t>& epoch_order() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace instinct::data
