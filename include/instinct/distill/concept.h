#pragma once
// `instinct-train concept`: end-to-end concept self-distillation. The student trunk feeds the teacher
// bundle's frozen detector neck and grounding module; gradients flow through them into the trunk.
// Every target comes from the teacher (no ground truth is read): per image the teacher scores the
// concept vocabulary, present concepts become positive prompts and absent ones negatives, and the
// teacher's kept queries (boxes, masks, logits), presence and encoder memory are the targets.
// A recipe on the shared training loop (trainer.h). See docs/concept.md for the recipe, the losses
// and the outputs.
#include <string>
#include <vector>

#include "instinct/distill/concept_loss.h"
#include "instinct/distill/trainer.h"

namespace instinct::distill {

/// Which concepts each image is prompted with.
struct ConceptSamplingConfig {
  std::vector<std::string> vocabulary;
  std::string vocabulary_file;
  int scan = 0;
  double positive_threshold = 0.5;
  int positives = 2;
  double negative_ratio = 1.0;
  int min_negatives = 1;
  template <class V>
  void visit(V& v) {
    v("vocabulary", vocabulary, "concept phrases: bank names, or any phrase when the bundle has a text encoder; empty = the whole teacher concept bank");
    v("vocabulary_file", vocabulary_file, "file of phrases, one per line ('#' comments), appended to vocabulary");
    v("scan", scan, "concepts scored by the teacher per image (random subset); 0 = whole vocabulary");
    v("positive_threshold", positive_threshold, "a concept is present when the teacher's best sigmoid(logit) x sigmoid(presence) >= this");
    v("positives", positives, "at most this many present concepts per image");
    v("negative_ratio", negative_ratio, "absent concepts per positive (rounded), at least min_negatives");
    v("min_negatives", min_negatives, "absent concepts per image even without positives");
  }
};

/// Loss weights and settings (each term is logged separately in metrics.jsonl).
struct ConceptLossConfig {
  double tau_keep = 0.5;
  double w_class = 2.0;
  double temperature = 1.0;
  double w_unmatched = 1.0;
  double w_presence = 2.0;
  double w_l1 = 5.0;
  double w_giou = 2.0;
  double w_mask = 5.0;
  double w_dice = 2.0;
  std::string mask_kind = "bce";
  int64_t mask_points = 0;
  double w_memory = 1.0;
  double clock_alpha = 5e-5;
  double clock_beta = 1e-7;
  double w_align = 0.1;
  double align_tau = 0.07;
  double w_trunk = 0.0;
  MatchCost match;
  template <class V>
  void visit(V& v) {
    v("tau_keep", tau_keep, "teacher queries with sigmoid(logit) x sigmoid(presence) >= this are targets");
    v("w_class", w_class, "soft-target class KD (temperature, confidence-weighted, presence-gated)");
    v("temperature", temperature, "KD temperature T (class and presence; loss x T^2)");
    v("w_unmatched", w_unmatched, "no-object weight of unmatched student queries");
    v("w_presence", w_presence, "soft-target presence KD");
    v("w_l1", w_l1, "matched box L1 (cxcywh)");
    v("w_giou", w_giou, "matched box 1-GIoU weight");
    v("w_mask", w_mask, "matched mask BCE (or focal) against the teacher's soft masks");
    v("w_dice", w_dice, "matched mask dice weight");
    v("mask_kind", mask_kind, "bce | focal");
    v("mask_points", mask_points, "mask losses on N random points per mask (0 = full mask)");
    v("w_memory", w_memory, "CLoCK memory KD (box-area weighted squared error on the encoder memory)");
    v("clock_alpha", clock_alpha, "CLoCK foreground weight (1/box area per token)");
    v("clock_beta", clock_beta, "CLoCK background weight (1/N_bg per token)");
    v("w_align", w_align, "region-text InfoNCE between projected matched query embeddings and concept embeddings");
    v("align_tau", align_tau, "InfoNCE temperature");
    v("w_trunk", w_trunk, "Stage-A trunk regulariser: Stage A's loss (1 - cosine + channel-summed squared error) to the teacher trunk");
    v("match_class", match.w_class, "matching cost: focal class weight");
    v("match_l1", match.w_l1, "matching cost: L1 weight");
    v("match_giou", match.w_giou, "matching cost: -GIoU weight");
  }
};

/// Everything `instinct-train concept` reads: the trainer's settings, then the student's prompts,
/// neck fine-tuning, concept sampling and the loss.
struct ConceptConfig : TrainerConfig {
  std::string student_concepts;
  bool train_neck = false;
  ConceptSamplingConfig concepts;
  ConceptLossConfig loss;
  ConceptConfig() {
    run_dir = "runs/concept";
    batch_size = 4;
    batchnorm_stats = false;  // small concept batches make the running statistics noisy
  }
  template <class V>
  void visit(V& v) {
    TrainerConfig::visit(v);
    v("student_concepts", student_concepts, "bundle dir with the student's concept_bank; empty = teacher's");
    v("train_neck", train_neck, "fine-tune a copy of the detector neck too (run_dir/detector_neck.pt)");
    v("concepts", concepts, "");
    v("loss", loss, "");
  }
};

/// Runs concept distillation end to end (docs/concept.md). Returns the exit code: 0 when training
/// completed, 128+signal when stopped by SIGINT/SIGTERM after writing a checkpoint.
int run_concept(const ConceptConfig& cfg);

}  // namespace instinct::distill
