#pragma once
// Stage A: feature distillation of the teacher trunk output into the student trunk.
//
// loss = w_cos * mean_valid(1 - cos_c(S, T)) + w_mse * mean_valid(sum_c (S - T)^2)
// where cos_c is the cosine over channels at each location, and "valid" excludes padded locations
// (longest_pad preprocessing). See docs/stageA.md for the recipe, outputs and resume semantics.
#include <ATen/Tensor.h>

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "instinct/data/dataset.h"
#include "instinct/distill/distributed.h"
#include "instinct/distill/optim.h"
#include "instinct/distill/run_utils.h"
#include "instinct/model/vit.h"

namespace instinct {
class Progress;
}

namespace instinct::distill {

/// Where the teacher comes from.
struct TeacherConfig {
  std::string bundle;          ///< teacher bundle directory (docs/teacher-bundle.md)
  bool verify_hashes = true;   ///< check each module file's sha256 against bundle.json
  template <class V>
  void visit(V& v) {
    v("bundle", bundle, "teacher bundle directory (docs/teacher-bundle.md)");
    v("verify_hashes", verify_hashes, "check module sha256 against bundle.json at load");
  }
};

/// Student initialisation.
struct InitConfig {
  std::string from = "random";  ///< random (timm init) | instinct (trunk file / checkpoint) | timm (ImageNet ViT)
  std::string path;             ///< file for instinct/timm
  template <class V>
  void visit(V& v) {
    v("from", from, "random | instinct (InstinctSAM trunk file or our checkpoint) | timm (ImageNet ViT weights)");
    v("path", path, "weights file for instinct/timm (.pt or .safetensors)");
  }
};

/// Training and held-out data.
struct DataConfig {
  std::string type = "folder";    ///< folder (recursive image folder) | coco (annotation file + image root)
  std::string root;               ///< image folder, or the image root of a COCO annotation file
  std::string annotations;        ///< COCO instances json (type coco)
  std::string eval_root;          ///< held-out image folder; empty = hold out the last eval_images of root
  int eval_images = 32;           ///< number of held-out images
  std::string resize;             ///< squash | longest_pad; empty = the bundle's mode
  int workers = 4;                ///< decoding threads
  int prefetch = 2;               ///< batches decoded ahead
  double max_bad_fraction = 0.01; ///< fail when more than this fraction of images is unreadable
  template <class V>
  void visit(V& v) {
    v("type", type, "folder | coco");
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

/// Stage A loss weights.
struct LossConfig {
  double w_cos = 1.0;  ///< weight of mean (1 - channel cosine)
  double w_mse = 1.0;  ///< weight of mean over locations of the channel-summed squared error
  template <class V>
  void visit(V& v) {
    v("w_cos", w_cos, "weight of mean(1 - channel cosine)");
    v("w_mse", w_mse, "weight of mean over valid locations of sum over channels of squared error");
  }
};

/// Held-out evaluation.
struct EvalConfig {
  int64_t every = 500;  ///< evaluate every N optimizer steps (and at the end); 0 = only at the end
  template <class V>
  void visit(V& v) { v("every", every, "evaluate every N optimizer steps (0 = only at the end)"); }
};

/// Checkpointing and resume.
struct CheckpointConfig {
  int64_t every = 1000;        ///< write a checkpoint every N optimizer steps (0 = only at the end)
  int keep_last = 3;           ///< step checkpoints kept (older ones deleted)
  bool keep_best = true;       ///< also keep best.pt (highest held-out cosine)
  std::string resume = "auto"; ///< auto (latest in run_dir if any) | never (fail if run_dir has checkpoints) | a checkpoint path
  template <class V>
  void visit(V& v) {
    v("every", every, "checkpoint every N optimizer steps (0 = only at the end)");
    v("keep_last", keep_last, "step checkpoints kept");
    v("keep_best", keep_best, "keep best.pt (highest held-out cosine)");
    v("resume", resume, "auto | never | path to a checkpoint");
  }
};

/// Logging and progress display.
struct LogConfig {
  int64_t every = 10;            ///< write a train row to metrics.jsonl every N optimizer steps
  std::string progress = "auto"; ///< auto | bar | lines | off
  template <class V>
  void visit(V& v) {
    v("every", every, "metrics.jsonl train row every N optimizer steps");
    v("progress", progress, "auto (bar on a terminal) | bar | lines | off");
  }
};

/// Teacher-feature cache.
struct CacheConfig {
  std::string dir;  ///< directory of the on-disk fp16 teacher-feature cache; empty = off
  template <class V>
  void visit(V& v) { v("dir", dir, "on-disk fp16 teacher-feature cache directory; empty = off"); }
};

/// Everything `instinct-train stageA` reads.
struct StageAConfig {
  std::string run_dir = "runs/stageA";  ///< output directory (config, metrics, checkpoints, trunk)
  std::string device = "auto";          ///< auto | cpu | cuda | cuda:N
  std::string precision = "auto";       ///< auto (bf16 autocast on CUDA, fp32 on CPU) | fp32 | bf16
  int64_t seed = 0;                     ///< seed for initialisation and data order
  int threads = 0;                      ///< intra-op CPU threads; 0 = all cores
  int batch_size = 8;                   ///< micro-batch per process
  TeacherConfig teacher;
  bool batchnorm_stats = true;  ///< update the adapter's BatchNorm running statistics (false: frozen at the init's; per-rank batches are small)
  bool profile = false;         ///< CUDA: synchronise at phase boundaries so the step-time split (time_*/ms_* in metrics) is exact
  model::VitConfig student;
  InitConfig init;
  DataConfig data;
  OptimConfig optim;
  LossConfig loss;
  EmaConfig ema;
  EvalConfig eval;
  CheckpointConfig checkpoint;
  LogConfig log;
  CacheConfig cache;
  DistributedConfig distributed;  ///< data parallelism across processes (docs/distributed.md)
  template <class V>
  void visit(V& v) {
    v("run_dir", run_dir, "output directory");
    v("device", device, "auto | cpu | cuda | cuda:N");
    v("precision", precision, "auto | fp32 | bf16 (autocast on CUDA)");
    v("seed", seed, "seed for initialisation and data order");
    v("threads", threads, "CPU intra-op threads; 0 = all cores");
    v("batch_size", batch_size, "micro-batch per process");
    v("teacher", teacher, "");
    v("batchnorm_stats", batchnorm_stats, "update the adapter's BatchNorm running stats (false: frozen at init)");
    v("profile", profile, "CUDA: sync at phase boundaries for an exact step-time split");
    v("student", student, "");
    v("init", init, "");
    v("data", data, "");
    v("optim", optim, "");
    v("loss", loss, "");
    v("ema", ema, "");
    v("eval", eval, "");
    v("checkpoint", checkpoint, "");
    v("log", log, "");
    v("cache", cache, "");
    v("distributed", distributed, "");
  }
};

/// Per-batch Stage A loss terms (0-dim tensors).
struct StageALoss {
  at::Tensor total, cos_term, mse_term, cosine;  ///< cosine = mean valid channel cosine (detached)
};

/// Computes the Stage A loss in fp32. `student`, `teacher`: (B,C,G,G); `valid`: (B,G,G) bool or
/// undefined (all valid).
StageALoss stage_a_loss(const at::Tensor& student, const at::Tensor& teacher, const at::Tensor& valid,
                        const LossConfig& cfg);

/// Pixel-level valid mask (B,S,S) -> grid-level (B,G,G): a location is valid when more than half of
/// its cell is valid.
at::Tensor grid_valid_mask(const at::Tensor& pixel_valid, int grid);

// Pieces Stage A shares with concept distillation.

/// Training and held-out datasets per `d`: the first eval_images of eval_root, or else the last
/// eval_images of root held out. Errors name the key.
std::pair<std::shared_ptr<data::Dataset>, std::shared_ptr<data::Dataset>> make_datasets(const DataConfig& d);

/// Initialises a fresh student per `init` (random: timm init already done; instinct: trunk file;
/// timm: ImageNet ViT weights). Unknown `from` values are an error.
void init_student(model::StudentTrunkImpl& student, const InitConfig& init);

/// Normalised images (B,3,S,S) bilinearly resized to size x size (returned as is when S == size).
at::Tensor resize_images(const at::Tensor& images, int size);

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

/// What follows every optimizer step in both trainers: evaluation when `eval.every` divides the step
/// or on the last step (`evaluate` logs and returns the held-out metric, higher is better; it updates
/// st.best_metric), a checkpoint when `checkpoint.every` divides the step, on the last step or on a
/// new best (`save(best)`), then SIGINT/SIGTERM: checkpoint and return the signal. Returns 0 to go on.
/// With several ranks, only rank 0 evaluates and saves, and all ranks agree on stopping.
int finish_step(TrainState& st, int64_t epoch, bool last, const EvalConfig& eval, const CheckpointConfig& checkpoint,
                Progress& progress, const std::function<double()>& evaluate, const std::function<void(bool)>& save,
                const Distributed& dist);

/// End of a run: warns about skipped images; when `stopped`, says how to resume and returns
/// 128 + signal; otherwise writes <run_dir>/trunk.pt (and trunk_ema.pt when `ema_model`) and returns 0.
int finish_run(int stopped, const TrainState& st, int64_t total_steps, int64_t skipped_images,
               const std::string& run_dir, model::StudentTrunkImpl& student, model::StudentTrunkImpl* ema_model);

/// Runs Stage A end to end (see docs/stageA.md). Returns the process exit code: 0 when training
/// completed, 128+signal when stopped by SIGINT/SIGTERM after writing a checkpoint.
int run_stage_a(const StageAConfig& cfg);

}  // namespace instinct::distill
