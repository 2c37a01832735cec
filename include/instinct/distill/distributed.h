#pragma once
// Data parallelism on PyTorch's own distributed engine (c10d): ProcessGroupGloo on CPU,
// ProcessGroupNCCL on CUDA (builds with INSTINCT_WITH_NCCL), rendezvous through a TCPStore at
// MASTER_ADDR:MASTER_PORT. The rank and world come from torchrun's / Slurm-launcher environment
// (RANK, WORLD_SIZE, LOCAL_RANK), so `torchrun --nproc-per-node N instinct-train stageA ...` works.
// Without WORLD_SIZE (or with 1) everything is a no-op and nothing is initialised.
//
// Every collective waits at most `timeout_s`; a rank that died or diverged makes the others fail
// with an instinct::Error naming the collective instead of hanging.
#include <ATen/core/Tensor.h>

#include <memory>
#include <string>
#include <vector>

namespace instinct::distill {

/// Distributed settings (the `distributed:` config section).
struct DistributedConfig {
  std::string backend = "auto";  ///< auto (nccl on CUDA when built with it, else gloo) | gloo | nccl
  int timeout_s = 300;           ///< give up on a collective (or the rendezvous) after this long
  template <class V>
  void visit(V& v) {
    v("backend", backend, "auto | gloo | nccl (rank/world from RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT)");
    v("timeout_s", timeout_s, "seconds before a collective or the rendezvous fails (a dead rank)");
  }
};

/// This process's place in a data-parallel job and its collectives.
class Distributed {
 public:
  /// A single process (world 1).
  Distributed() = default;
  /// Reads the launcher's environment; with WORLD_SIZE > 1 connects to the others. Throws
  /// instinct::Error for inconsistent variables, an unknown backend or a failed rendezvous.
  static Distributed from_env(const DistributedConfig& cfg, bool cuda);

  int rank() const { return rank_; }
  int world_size() const { return world_; }
  int local_rank() const { return local_rank_; }
  bool enabled() const { return world_ > 1; }
  /// Rank 0 logs, evaluates and writes files.
  bool is_main() const { return rank_ == 0; }
  const std::string& backend() const { return backend_; }

  /// Copies rank 0's values of `tensors` into every rank's (initial weights, EMA, buffers).
  void broadcast(const std::vector<at::Tensor>& tensors) const;
  /// Replaces each defined gradient by its mean over the ranks (flattened into buckets of at most
  /// `bucket_mb` per dtype); parameters without a gradient contribute zeros.
  void average_gradients(const std::vector<at::Tensor>& params, int64_t bucket_mb = 25) const;
  /// Sum of `v` over the ranks.
  double sum(double v) const;
  /// Waits for every rank.
  void barrier() const;

  struct Impl;  ///< the backend (defined in distributed.cpp)

 private:
  std::shared_ptr<Impl> impl_;
  int rank_ = 0, world_ = 1, local_rank_ = 0;
  std::string backend_ = "none";
};

/// What a trainer does first: joins the job described by the environment, moves `device` ("auto" or
/// "cuda") to this rank's GPU, quiets ranks other than 0 (warnings and errors only) and logs the job.
Distributed join_data_parallel(const DistributedConfig& cfg, std::string& device);

/// Once per step: if any rank received SIGINT/SIGTERM, every rank records it, so all stop together.
void agree_on_stop(const Distributed& dist);

}  // namespace instinct::distill
