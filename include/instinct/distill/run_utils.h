#pragma once
// Pieces every trainer shares: the run directory (resolved config, resume discovery, device and
// precision), training checkpoints (atomic, Python-readable, keep-last-K + best), metrics.jsonl.
#include <ATen/Device.h>
#include <ATen/core/ivalue.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "instinct/data/dataset.h"
#include "instinct/distill/optim.h"
#include "instinct/model/vit.h"

namespace instinct::teacher {
struct BundleInfo;
}

namespace instinct::distill {

/// Progress of a training run, saved in checkpoints.
struct TrainState {
  int64_t step = 0;            ///< optimizer steps completed
  int64_t epoch = 0;           ///< current epoch
  int64_t batch_in_epoch = 0;  ///< micro-batches of `epoch` already consumed
  int64_t images_per_batch = 0;  ///< images per micro-batch over all ranks when saved (0: unknown, older checkpoint)
  double best_metric = -std::numeric_limits<double>::infinity();  ///< best held-out metric so far
};

/// The run directory, device and resume decision for one training process.
struct RunContext {
  std::string dir;
  at::Device device{at::kCPU};
  bool autocast = false;     ///< bf16 autocast on CUDA
  std::string resume_from;   ///< checkpoint to resume from ("" = fresh run)
  /// With resume=auto: every step checkpoint of the run, newest first (resume_from is the first);
  /// the trainer falls back along it when the newest is unreadable. Otherwise just resume_from.
  std::vector<std::string> resume_candidates;

  /// Picks the device ("auto" = CUDA when available), sets CPU threads, and finds the checkpoint to
  /// resume from per `resume` (auto | never | path). Removes the temporary files (`*.tmp.<pid>`,
  /// `best.pt.tmp`) that writers killed mid-write left in the run directory and its checkpoints/
  /// (a file whose writer process is still alive is kept). Creates nothing: the directory appears
  /// with write_resolved_config(), once the run has been set up, so a start-up error leaves no empty
  /// run directory behind. Errors are one line.
  static RunContext open(const std::string& dir, const std::string& device, const std::string& precision,
                         int threads, const std::string& resume);
  /// Creates <dir>/checkpoints and writes `yaml` to <dir>/config.yaml atomically.
  void write_resolved_config(const std::string& yaml) const;
};

/// Sets student out_channels/out_grid from the teacher when 0 and checks them (and the input size)
/// against the bundle otherwise.
void resolve_student_shape(model::VitConfig& student, const teacher::BundleInfo& info);

/// Named trainable parameters of a module (Python naming).
std::vector<std::pair<std::string, at::Tensor>> trainable_parameters(const torch::nn::Module& m);

/// A short hash of a dataset's file list (identity of a feature cache).
std::string dataset_fingerprint(const data::Dataset& ds);

/// Writes training checkpoints `<dir>/checkpoints/step_XXXXXXXX.pt` (keeping the last `keep_last`)
/// and `<dir>/checkpoints/best.pt`. A checkpoint is a torch.save dict Python reads with
/// weights_only=True: {'trunk', 'backbone', 'model_name', 'format', 'stage', 'step', 'epoch',
/// 'batch_in_epoch', 'best_metric', 'optimizer', 'ema' (or absent), 'ema_updates', 'rng', 'config',
/// 'heads' (or absent), 'checksum'}; 'checksum' is checkpoint_digest() of everything else.
class CheckpointKeeper {
 public:
  CheckpointKeeper(std::string run_dir, int keep_last, bool keep_best);
  /// `heads`: trainer-specific auxiliary weights (e.g. concept's region-text projection), stored
  /// under 'heads' when non-empty.
  void save(const TrainState& st, model::StudentTrunkImpl& student, const AdamW& opt, const Ema* ema,
            model::StudentTrunkImpl* ema_model, const std::string& config_yaml, const std::string& stage, bool best,
            const std::vector<std::pair<std::string, at::Tensor>>& heads = {});

 private:
  std::string dir_;
  int keep_last_;
  bool keep_best_;
};

/// The newest step checkpoint in <run_dir>/checkpoints ("" if none).
std::string latest_checkpoint(const std::string& run_dir);

/// "sha256:<hex>" over every entry of a checkpoint dict except 'checksum', in order: keys, strings,
/// numbers and each tensor's dtype, shape and bytes (nested dicts and lists included).
std::string checkpoint_digest(const c10::IValue& checkpoint);

/// Reads a checkpoint and verifies its checksum (when it has one: older checkpoints do not).
/// Throws instinct::Error naming the file for an unreadable, truncated or altered file.
c10::IValue read_checkpoint(const std::string& path);

/// Restores student, optimizer, EMA, RNG and progress from a checkpoint written by CheckpointKeeper.
/// `heads` (when non-empty): tensors restored in place, by name, from the checkpoint's 'heads'
/// (missing names or shape mismatches are errors).
TrainState load_checkpoint(const std::string& path, model::StudentTrunkImpl& student, AdamW& opt, Ema* ema,
                           model::StudentTrunkImpl* ema_model,
                           const std::vector<std::pair<std::string, at::Tensor>>& heads = {});
/// load_checkpoint from an object read_checkpoint() returned (`path` names it in errors).
TrainState restore_checkpoint(const c10::IValue& obj, const std::string& path, model::StudentTrunkImpl& student,
                              AdamW& opt, Ema* ema, model::StudentTrunkImpl* ema_model,
                              const std::vector<std::pair<std::string, at::Tensor>>& heads = {});

/// Appends one JSON object per line to metrics.jsonl. On resume, rows after `resume_step` (written
/// after the checkpoint by an interrupted run) are dropped first so the log has no duplicates.
class MetricsLog {
 public:
  /// An empty path gives a log that writes nothing (ranks other than 0).
  MetricsLog(const std::string& path, int64_t resume_step, bool resuming);
  /// Appends `row` as one line and flushes it. Throws instinct::Error naming the file when the write
  /// fails (disk full): the run stops rather than lose rows silently.
  void write(const nlohmann::json& row);

 private:
  std::string path_;
  std::ofstream out_;
};

/// Step-time split for the train rows of metrics.jsonl. lap(name) charges the time since the
/// previous lap (or start()) to `name`. With `sync` (profile=true on CUDA) every lap first waits for
/// the device, so each phase gets its own GPU time (slower, exact); without it the split is where
/// the host waited, which on CUDA mostly lands on the first phase that needs a result.
class PhaseTimer {
 public:
  PhaseTimer(bool sync, const at::Device& device);
  void start();
  void lap(const char* name);
  /// Adds "time_<phase>" (share of the window's timed time) and "ms_<phase>" (milliseconds per
  /// batch over `batches` batches) to `row`, then starts a new window.
  void write(nlohmann::json& row, int64_t batches);

 private:
  bool sync_;
  std::vector<std::pair<std::string, double>> phases_;  // in first-lap order
  double t_ = 0;
  double now() const;
};

}  // namespace instinct::distill
