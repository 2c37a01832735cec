#pragma once
// `instinct-train concept`: end-to-end concept self-distillation. The student trunk feeds the teacher
// bundle's frozen detector neck and grounding module; gradients flow through them into the trunk.
// Every target comes from the teacher (no ground truth is read): per image the teacher scores the
// concept vocabulary, present concepts become positive prompts and absent ones negatives, and the
// teacher's kept queries (boxes, masks, logits), presence and encoder memory are the targets.
// See docs/concept.md for the recipe, the losses and the outputs.
#include <string>
#include <vector>

#include "instinct/distill/concept_loss.h"
#include "instinct/distill/optim.h"
#include "instinct/distill/stage_a.h"
#include "instinct/model/vit.h"

namespace instinct::distill {

/// Which concepts each image is prompted with.
struct ConceptSamplingConfig {
  std::vector<std::string> vocabulary;  ///< concept phrases (bank names, or any phrase with a text encoder); empty = the teacher's bank
  std::string vocabulary_file;          ///< phrases one per line ('#' comments), appended to `vocabulary`
  int scan = 0;                         ///< concepts the teacher scores per image (random subset); 0 = whole vocabulary
  double positive_threshold = 0.5;      ///< a concept is present when the teacher's best sigmoid(logit) x sigmoid(presence) >= this
  int positives = 2;                    ///< at most this many present concepts per image
  double negative_ratio = 1.0;          ///< absent concepts per positive (rounded), at least min_negatives
  int min_negatives = 1;                ///< absent concepts per image even without positives
  template <class V>
  void visit(V& v) {
    v("vocabulary", vocabulary, "concept phrases: bank names, or any phrase when the bundle has a text encoder; empty = the whole teacher concept bank");
    v("vocabulary_file", vocabulary_file, "file of phrases, one per line ('#' comments), appended to vocabulary");
    v("scan", scan, "concepts scored by the teacher per image (random subset); 0 = whole vocabulary");
    v("positive_threshold", positive_threshold, "present when the teacher's top query score >= this");
    v("positives", positives, "max present concepts prompted per image");
    v("negative_ratio", negative_ratio, "absent concepts per present one");
    v("min_negatives", min_negatives, "absent concepts per image at least");
  }
};

/// Loss weights and settings (each term is logged separately in metrics.jsonl).
struct ConceptLossConfig {
  double tau_keep = 0.5;        ///< teacher queries with sigmoid(logit) x sigmoid(presence) >= this are targets
  double w_class = 2.0;         ///< soft-target class KD (temperature, confidence-weighted, presence-gated)
  double temperature = 1.0;     ///< KD temperature T (class and presence; loss x T^2)
  double w_unmatched = 1.0;     ///< weight of the "no object" term for unmatched student queries
  double w_presence = 2.0;      ///< soft-target presence KD
  double w_l1 = 5.0;            ///< matched box L1 (cxcywh)
  double w_giou = 2.0;          ///< matched box 1 - GIoU
  double w_mask = 5.0;          ///< matched mask BCE (or focal) against the teacher's soft masks
  double w_dice = 2.0;          ///< matched mask dice
  std::string mask_kind = "bce";  ///< bce | focal
  int64_t mask_points = 0;      ///< > 0: mask losses on this many random points per mask
  double w_memory = 1.0;        ///< CLoCK memory KD (box-area weighted squared error on the encoder memory)
  double clock_alpha = 5e-5;    ///< CLoCK foreground weight
  double clock_beta = 1e-7;     ///< CLoCK background weight
  double w_align = 0.1;         ///< region-text InfoNCE between projected matched query embeddings and concept embeddings
  double align_tau = 0.07;      ///< InfoNCE temperature
  double w_trunk = 0.0;         ///< Stage-A trunk regulariser: Stage A's loss (1 - cosine + channel-summed squared error) to the teacher trunk
  MatchCost match;              ///< Hungarian cost (2 focal class + 5 L1 + 2 (-GIoU))
  template <class V>
  void visit(V& v) {
    v("tau_keep", tau_keep, "teacher queries kept as targets: score >= tau_keep");
    v("w_class", w_class, "soft class KD weight");
    v("temperature", temperature, "KD temperature (class, presence)");
    v("w_unmatched", w_unmatched, "no-object weight of unmatched student queries");
    v("w_presence", w_presence, "presence KD weight");
    v("w_l1", w_l1, "matched box L1 weight");
    v("w_giou", w_giou, "matched box 1-GIoU weight");
    v("w_mask", w_mask, "matched mask BCE/focal weight");
    v("w_dice", w_dice, "matched mask dice weight");
    v("mask_kind", mask_kind, "bce | focal");
    v("mask_points", mask_points, "mask losses on N random points per mask (0 = full mask)");
    v("w_memory", w_memory, "CLoCK memory KD weight");
    v("clock_alpha", clock_alpha, "CLoCK foreground weight (1/box area per token)");
    v("clock_beta", clock_beta, "CLoCK background weight (1/N_bg per token)");
    v("w_align", w_align, "region-text InfoNCE weight");
    v("align_tau", align_tau, "InfoNCE temperature");
    v("w_trunk", w_trunk, "trunk regulariser weight (Stage A loss: 1 - cosine + squared error)");
    v("match_class", match.w_class, "matching cost: focal class weight");
    v("match_l1", match.w_l1, "matching cost: L1 weight");
    v("match_giou", match.w_giou, "matching cost: -GIoU weight");
  }
};

/// Everything `instinct-train concept` reads.
struct ConceptConfig {
  std::string run_dir = "runs/concept";  ///< output directory
  std::string device = "auto";           ///< auto | cpu | cuda | cuda:N
  std::string precision = "auto";        ///< auto (bf16 autocast on CUDA, fp32 on CPU) | fp32 | bf16
  int64_t seed = 0;                      ///< seed for concept sampling and data order
  int threads = 0;                       ///< intra-op CPU threads; 0 = all cores
  int batch_size = 4;                    ///< images per micro-batch (each with several concept prompts)
  bool profile = false;                  ///< CUDA: synchronise at phase boundaries so the step-time split is exact (CPU: always exact)
  TeacherConfig teacher;
  std::string student_concepts;          ///< bundle directory whose concept_bank prompts the student; empty = the teacher's
  bool train_neck = false;               ///< also fine-tune a copy of the detector neck (saved as <run_dir>/detector_neck.pt)
  bool batchnorm_stats = false;          ///< update the adapter's BatchNorm running statistics (false: kept at the init's; small concept batches make them noisy)
  model::VitConfig student;
  InitConfig init;                       ///< usually from: instinct, path: a Stage A trunk.pt
  DataConfig data;
  OptimConfig optim;
  ConceptSamplingConfig concepts;
  ConceptLossConfig loss;
  EmaConfig ema;
  EvalConfig eval;
  CheckpointConfig checkpoint;
  LogConfig log;
  DistributedConfig distributed;  ///< data parallelism across processes (docs/distributed.md)
  template <class V>
  void visit(V& v) {
    v("run_dir", run_dir, "output directory");
    v("device", device, "auto | cpu | cuda | cuda:N");
    v("precision", precision, "auto | fp32 | bf16 (autocast on CUDA)");
    v("seed", seed, "seed for concept sampling and data order");
    v("threads", threads, "CPU intra-op threads; 0 = all cores");
    v("batch_size", batch_size, "images per micro-batch");
    v("profile", profile, "CUDA: sync at phase boundaries for an exact step-time split");
    v("teacher", teacher, "");
    v("student_concepts", student_concepts, "bundle dir with the student's concept_bank; empty = teacher's");
    v("train_neck", train_neck, "fine-tune a copy of the detector neck too (run_dir/detector_neck.pt)");
    v("batchnorm_stats", batchnorm_stats, "update the adapter's BatchNorm running stats (false: frozen at init)");
    v("student", student, "");
    v("init", init, "");
    v("data", data, "");
    v("optim", optim, "");
    v("concepts", concepts, "");
    v("loss", loss, "");
    v("ema", ema, "");
    v("eval", eval, "");
    v("checkpoint", checkpoint, "");
    v("log", log, "");
    v("distributed", distributed, "");
  }
};

/// Runs concept distillation end to end (docs/concept.md). Returns the exit code: 0 when training
/// completed, 128+signal when stopped by SIGINT/SIGTERM after writing a checkpoint.
int run_concept(const ConceptConfig& cfg);

}  // namespace instinct::distill
