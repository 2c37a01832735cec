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
  std::string backend = "auto";
  int timeout_s = 300;
  bool overlap = true;
  double bucket_mb = 25;
  template <class V>
  void visit(V& v) {
    v("backend", backend, "auto | gloo | nccl (rank/world from RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT)");
    v("timeout_s", timeout_s, "seconds before a collective or the rendezvous fails (a dead rank)");
    v("overlap", overlap, "all-reduce gradient buckets while backward still runs (false: after backward)");
    v("bucket_mb", bucket_mb, "gradient bucket size in MiB");
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
  /// Joins a job of `world` ranks as `rank` through a TCPStore at addr:port (rank 0 serves it);
  /// what from_env does once it has read the environment. Creates a process group even for
  /// world 1 (tests of the backends on one GPU).
  static Distributed connect(const DistributedConfig& cfg, int rank, int world, int local_rank, const std::string& addr,
                             int port, bool cuda);

  int rank() const { return rank_; }
  int world_size() const { return world_; }
  int local_rank() const { return local_rank_; }
  /// Whether a process group exists (from_env creates one only for WORLD_SIZE > 1).
  bool enabled() const { return impl_ != nullptr; }
  /// Rank 0 logs, evaluates and writes files.
  bool is_main() const { return rank_ == 0; }
  const std::string& backend() const { return backend_; }

  /// Copies rank 0's values of `tensors` into every rank's (initial weights, EMA, buffers).
  void broadcast(const std::vector<at::Tensor>& tensors) const;
  /// Replaces each defined gradient by its mean over the ranks (flattened into buckets of at most
  /// `bucket_mb` per dtype); parameters without a gradient contribute zeros.
  void average_gradients(const std::vector<at::Tensor>& params, double bucket_mb = 25) const;
  /// One round of the stop agreement (call once per step on every rank): contributes this rank's
  /// pending signal and returns the largest signal number any rank contributed `lag` rounds ago
  /// (0: go on). lag is 0 on Gloo (a host round trip) and 2 on NCCL, where the flag lives on the
  /// GPU and is read back through pinned memory once the stream has passed it, so the step loop
  /// never waits for the device.
  int agree_on_signal(int local_signal) const;
  /// Waits for every rank.
  void barrier() const;

  struct Impl;  ///< the backend (defined in distributed.cpp)

 private:
  friend class GradientReducer;
  std::shared_ptr<Impl> impl_;
  int rank_ = 0, world_ = 1, local_rank_ = 0;
  std::string backend_ = "none";
};

/// What a trainer does first: joins the job described by the environment, moves `device` ("auto" or
/// "cuda") to this rank's GPU, quiets ranks other than 0 (warnings and errors only) and logs the job.
Distributed join_data_parallel(const DistributedConfig& cfg, std::string& device);

/// Once per step on every rank: the signal to stop on now (0: go on). Single process: the pending
/// SIGINT/SIGTERM. Data parallel: the result of Distributed::agree_on_signal, so every rank stops
/// at the same step (a signal on any rank stops all of them).
int agree_on_stop(const Distributed& dist);

/// Averages gradients over the ranks, overlapped with the backward pass as DDP does: parameters
/// are split into buckets (same dtype and device, at most bucket_mb) in reverse order, which is
/// roughly the order backward produces their gradients; a hook on each parameter copies its
/// gradient into the bucket's flat buffer, and a bucket's all-reduce starts as soon as its last
/// gradient arrived and every earlier bucket has started (collectives must be issued in the same
/// order on every rank). finish() starts the buckets of parameters that got no gradient this step
/// (they contribute their accumulated gradient or zeros), waits, and writes the means into .grad.
/// With overlap off, finish() does Distributed::average_gradients instead; with one process every
/// call is a no-op. Gradient accumulation works like DDP's no_sync(): only the last micro-batch's
/// backward communicates.
class GradientReducer {
 public:
  GradientReducer(const Distributed& dist, std::vector<at::Tensor> params, const DistributedConfig& cfg);
  ~GradientReducer();
  GradientReducer(const GradientReducer&) = delete;
  GradientReducer& operator=(const GradientReducer&) = delete;
  /// Call before each backward: `last_micro_batch` is true for the one that ends an optimizer step.
  void prepare(bool last_micro_batch);
  /// Call after the last micro-batch's backward, before clipping and the optimizer step.
  void finish();
  /// Number of buckets (0 without overlap or with one process).
  int64_t buckets() const;
  /// Buckets whose all-reduce started during the last backward, i.e. before finish().
  int64_t started_during_backward() const { return started_early_; }

  struct State;  ///< buckets and hooks (distributed.cpp)

 private:
  Distributed dist_;
  std::vector<at::Tensor> params_;
  DistributedConfig cfg_;
  std::shared_ptr<State> state_;
  std::vector<unsigned> hooks_;
  int64_t started_early_ = 0;
};

}  // namespace instinct::distill
