#pragma once
// Stage A: feature distillation of the teacher trunk output into the student trunk, a recipe on the
// shared training loop (trainer.h). The loss is feature_loss (feature_loss.h) on the teacher trunk's
// features, optionally read from an on-disk fp16 cache; the held-out metric is the mean channel
// cosine. See docs/stageA.md for the recipe, outputs and resume semantics.
#include <string>

#include "instinct/distill/feature_loss.h"
#include "instinct/distill/trainer.h"

namespace instinct::distill {

/// Teacher-feature cache.
struct CacheConfig {
  std::string dir;
  template <class V>
  void visit(V& v) { v("dir", dir, "on-disk fp16 teacher-feature cache directory; empty = off"); }
};

/// Everything `instinct-train stageA` reads: the trainer's settings, then the loss weights and the cache.
struct StageAConfig : TrainerConfig {
  FeatureLossConfig loss;
  CacheConfig cache;
  StageAConfig() {
    run_dir = "runs/stageA";
    batch_size = 8;
    batchnorm_stats = true;
  }
  template <class V>
  void visit(V& v) {
    TrainerConfig::visit(v);
    v("loss", loss, "");
    v("cache", cache, "");
  }
};

/// Runs Stage A end to end (see docs/stageA.md). Returns the process exit code: 0 when training
/// completed, 128+signal when stopped by SIGINT/SIGTERM after writing a checkpoint.
int run_stage_a(const StageAConfig& cfg);

}  // namespace instinct::distill
