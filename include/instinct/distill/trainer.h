#pragma once
// The training loop every distillation stage runs on, and the recipe interface a stage implements.
//
// The loop (train()) owns the run directory and resume, data parallelism, the loader with device
// prefetch, the student trunk, AdamW and EMA, the gradient reducer, the step-time split, the
// metrics log, the checkpoint keeper, the progress display and the cadence of a run:
//
//   for each micro-batch: recipe.loss() -> backward (gradients all-reduced across ranks)
//   every `optim.accum_steps` micro-batches: clip, LR schedule, AdamW step, EMA update (a step with
//     a non-finite gradient norm is skipped; `max_bad_steps` in a row stop the run);
//     every `log.every` steps a train row; every `eval.every` steps (and at the end) the recipe's
//     held-out evaluation of the raw and EMA students; every `checkpoint.every` steps, at the end
//     and on a new best a checkpoint; SIGINT/SIGTERM: checkpoint and stop (exit 128 + signal).
//
// A recipe (Stage A, concept distillation; see stage_a.h, concept.h) supplies only its model
// pieces (teacher, extra trainable heads), its loss terms, its held-out evaluation and its hooks.
#include <ATen/Tensor.h>
#include <nlohmann/json.hpp>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "instinct/data/dataset.h"
#include "instinct/data/image_ops.h"
#include "instinct/data/loader.h"
#include "instinct/distill/distributed.h"
#include "instinct/distill/optim.h"
#include "instinct/distill/run_utils.h"
#include "instinct/model/vit.h"

namespace instinct::distill {

/// Where the teacher comes from.
struct TeacherConfig {
  std::string bundle;
  bool verify_hashes = true;
  template <class V>
  void visit(V& v) {
    v("bundle", bundle, "teacher bundle directory (docs/teacher-bundle.md)");
    v("verify_hashes", verify_hashes, "check module sha256 against bundle.json at load");
  }
};

/// Student initialisation on a fresh run.
struct InitConfig {
  std::string from = "random";
  std::string path;
  template <class V>
  void visit(V& v) {
    v("from", from, "random (timm init) | instinct (InstinctSAM trunk file or our checkpoint) | timm (ImageNet ViT weights)");
    v("path", path, "weights file for instinct/timm (.pt or .safetensors)");
  }
};

/// Training and held-out images.
struct DataConfig {
  std::string type = "folder";
  std::string root;
  std::string annotations;
  std::string eval_root;
  int eval_images = 32;
  std::string resize;
  int workers = 4;
  int prefetch = 2;
  double max_bad_fraction = 0.01;
  template <class V>
  void visit(V& v) {
    v("type", type, "folder (recursive image folder) | coco (annotation file + image root)");
    v("root", root, "image folder (folder) or COCO image root (coco)");
    v("annotations", annotations, "COCO instances json (coco)");
    v("eval_root", eval_root, "held-out image folder; empty = last eval_images of root");
    v("eval_images", eval_images, "number of held-out images");
    v("resize", resize, "squash | longest_pad; empty = bundle's mode");
    v("workers", workers, "decoding threads");
    v("prefetch", prefetch, "batches decoded ahead");
    v("max_bad_fraction", max_bad_fraction, "fail past this fraction of unreadable images");
  }
};

/// Held-out evaluation cadence (the `eval` block; not eval::EvalConfig, which configures instinct-eval).
struct HeldOutConfig {
  int64_t every = 500;
  template <class V>
  void visit(V& v) { v("every", every, "evaluate every N optimizer steps (0 = only at the end)"); }
};

/// Checkpointing and resume.
struct CheckpointConfig {
  int64_t every = 1000;
  int keep_last = 3;
  bool keep_best = true;
  std::string resume = "auto";
  template <class V>
  void visit(V& v) {
    v("every", every, "checkpoint every N optimizer steps (0 = only at the end)");
    v("keep_last", keep_last, "step checkpoints kept (older ones deleted)");
    v("keep_best", keep_best, "keep best.pt (best held-out selection metric)");
    v("resume", resume, "auto (latest in run_dir) | never (fail if run_dir has checkpoints) | path to a checkpoint");
  }
};

/// Logging and progress display.
struct LogConfig {
  int64_t every = 10;
  std::string progress = "auto";
  template <class V>
  void visit(V& v) {
    v("every", every, "metrics.jsonl train row every N optimizer steps");
    v("progress", progress, "auto (bar on a terminal) | bar | lines | off");
  }
};

/// The settings every trainer reads (the top of `instinct-train stageA|concept` configs). A recipe's
/// config derives from it, sets its own defaults in its constructor and visits these keys first.
struct TrainerConfig {
  std::string run_dir = "runs/train";
  std::string device = "auto";
  std::string precision = "auto";
  int64_t seed = 0;
  int threads = 0;
  int batch_size = 8;
  bool batchnorm_stats = true;
  bool profile = false;
  int64_t max_bad_steps = 10;
  TeacherConfig teacher;
  model::VitConfig student;
  InitConfig init;
  DataConfig data;
  OptimConfig optim;
  EmaConfig ema;
  HeldOutConfig eval;
  CheckpointConfig checkpoint;
  LogConfig log;
  DistributedConfig distributed;
  template <class V>
  void visit(V& v) {
    v("run_dir", run_dir, "output directory (config.yaml, metrics.jsonl, checkpoints/, trunk.pt)");
    v("device", device, "auto | cpu | cuda | cuda:N");
    v("precision", precision, "auto (bf16 autocast on CUDA, fp32 on CPU) | fp32 | bf16");
    v("seed", seed, "seed for initialisation, data order and sampling");
    v("threads", threads, "CPU intra-op threads; 0 = all cores");
    v("batch_size", batch_size, "images per micro-batch per process");
    v("batchnorm_stats", batchnorm_stats, "update the adapter's BatchNorm running stats (false: frozen at init)");
    v("profile", profile, "CUDA: sync at phase boundaries for an exact step-time split");
    v("max_bad_steps", max_bad_steps, "a step whose loss or gradient norm is not finite is skipped (counted in the train rows as bad_steps); stop, with the last good weights checkpointed, after this many in a row (0 = never)");
    v("teacher", teacher, "");
    v("student", student, "");
    v("init", init, "");
    v("data", data, "");
    v("optim", optim, "");
    v("ema", ema, "");
    v("eval", eval, "");
    v("checkpoint", checkpoint, "");
    v("log", log, "");
    v("distributed", distributed, "data parallelism across processes (docs/distributed.md)");
  }
};

/// What a recipe sees of a run. Filled by train() in order: `cfg`, `run`, `dist` before
/// Recipe::setup; `pre`, the datasets, `loader` and `student` after it; `state` once restored.
struct TrainContext {
  TrainerConfig* cfg = nullptr;
  RunContext run;
  Distributed dist;
  data::PreprocessConfig pre;
  std::shared_ptr<data::Dataset> train_set, eval_set;
  data::LoaderConfig loader;  ///< the training loader's settings
  model::StudentTrunk student{nullptr};
  TrainState state;

  /// The held-out images in order, every image, batches of the training batch size, not pinned.
  std::unique_ptr<data::Loader> held_out_loader() const;
};

/// One micro-batch's loss.
struct StepLoss {
  at::Tensor total;  ///< 0-dim, differentiable: what backward() sees
  /// Detached 0-dim terms, averaged per micro-batch over each log window under these metric names.
  std::vector<std::pair<std::string, at::Tensor>> terms;
};

/// A distillation stage on the shared loop.
class Recipe {
 public:
  virtual ~Recipe() = default;
  /// Checkpoint 'stage' value and progress label ("stageA", "concept").
  virtual std::string name() const = 0;
  /// The recipe's whole config (its TrainerConfig part is what the loop reads).
  virtual TrainerConfig& config() = 0;
  /// The resolved config as YAML (config.yaml and the checkpoints' 'config').
  virtual std::string config_yaml() const = 0;
  /// Validates the recipe's settings, loads its teacher on ctx.run.device and shapes
  /// ctx.cfg->student to it; returns the image preprocessing.
  virtual data::PreprocessConfig setup(TrainContext& ctx) = 0;
  /// Trainable tensors besides the student trunk, created once the student exists; trained by the
  /// same optimizer, synchronised across ranks and saved in checkpoints under 'heads'.
  virtual std::vector<std::pair<std::string, at::Tensor>> heads(TrainContext&) { return {}; }
  /// Called once the state is restored, before the first evaluation: held-out targets, caches.
  virtual void prepare(TrainContext& ctx) = 0;
  /// Start of every epoch (all ranks).
  virtual void on_epoch(TrainContext&) {}
  /// The loss of one micro-batch (images on the device). The loop has lapped "data"; the recipe
  /// laps its own phases on `timer`. std::nullopt skips the micro-batch (nothing to learn from it).
  virtual std::optional<StepLoss> loss(TrainContext& ctx, const data::Batch& batch, PhaseTimer& timer) = 0;
  /// Recipe-specific statistics of the log window just ended, added to the train row (and reset).
  virtual void window_stats(nlohmann::json&, int64_t /*images*/) {}
  /// Train-row metric names shown by the progress display besides loss and LR, with labels.
  virtual std::vector<std::pair<std::string, std::string>> progress_terms() const { return {}; }
  /// Held-out metrics of `model` (rank 0 only), written as an eval / eval_ema row.
  virtual nlohmann::json evaluate(TrainContext& ctx, model::StudentTrunkImpl& model) = 0;
  /// The eval row key that selects best.pt (higher is better).
  virtual std::string selection_metric() const = 0;
  /// One-line summary of an evaluation for the log.
  virtual std::string summarize(const nlohmann::json& metrics) const = 0;
  /// After every checkpoint write (rank 0).
  virtual void on_checkpoint(TrainContext&) {}
  /// End of the run on every rank; `completed` on rank 0 when training finished and trunk.pt was written.
  virtual void on_end(TrainContext&, bool /*completed*/) {}
};

/// Runs `recipe` end to end. Returns the process exit code: 0 when training completed, 128+signal
/// when stopped by SIGINT/SIGTERM after writing a checkpoint. User errors throw instinct::Error.
int train(Recipe& recipe);

/// Training and held-out datasets per `d`: the first eval_images of eval_root, or else the last
/// eval_images of root held out. Errors name the key.
std::pair<std::shared_ptr<data::Dataset>, std::shared_ptr<data::Dataset>> make_datasets(const DataConfig& d);

/// Initialises a fresh student per `init` (random: timm init already done; instinct: trunk file;
/// timm: ImageNet ViT weights). Unknown `from` values are an error.
void init_student(model::StudentTrunkImpl& student, const InitConfig& init);

/// Every parameter and buffer of `m` (what a rank-0 broadcast synchronises).
std::vector<at::Tensor> module_tensors(torch::nn::Module& m);

/// Re-expresses a resumed state's position in the epoch for `images_per_batch` images per
/// micro-batch over all ranks (batch size x world size) when the checkpoint was written with
/// another value, and records the current value for the next checkpoint.
void resume_position(TrainState& st, int64_t images_per_batch);

/// Optimizer-step plan of a run: micro-batches per step, total and warm-up steps (from max_steps /
/// warmup_steps, else from epochs), and the peak LR (base_lr scaled by global batch / base_batch).
struct StepPlan {
  int accum = 1;
  int64_t total_steps = 0, warmup_steps = 0;
  double peak_lr = 0;
};
StepPlan plan_steps(const OptimConfig& optim, int64_t batches_per_epoch, int batch_size);

}  // namespace instinct::distill
