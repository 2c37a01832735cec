#pragma once
// SAM3's concept metric cgF1 (sam3/eval/cgf1_eval.py as described in ../shared/reference/evaluation.md):
// per (image, phrase) pair, predictions with score >= the threshold are matched one-to-one to the
// phrase's ground-truth instances by Hungarian assignment on mask IoU; at each IoU threshold
// t = 0.50, 0.55, ..., 0.95 a match with IoU >= t is a true positive.
//   pmF1_t  = 2 P R / (P + R + 1e-4), P = TP / (TP + FP + 1e-4), R = TP / (TP + FN + 1e-4), with TP, FP,
//             FN summed over the pairs with ground truth (gt > 0) (~ 2 TP / (2 TP + FP + FN));
//   IL_MCC  = Matthews correlation of the image-level decision (dt > 0) against (gt > 0) over all pairs,
//             (TP TN - FP FN) / (sqrt(product of the four marginals) + 1e-6) (0 when a marginal is empty);
//   cgF1    = mean over t of pmF1_t x IL_MCC.
// The 1e-4 / 1e-6 guards are SAM3's (CGF1Eval.accumulate); tests/unit/test_sam3_parity.cpp checks
// the result against SAM3's own evaluator.
// Torch-free.
#include <array>
#include <cstdint>
#include <vector>

#include "instinct/eval/coco.h"

namespace instinct::eval {

/// One (image, phrase) pair after matching.
struct CgF1Pair {
  int64_t image_id = 0;
  int category_id = 0;
  int gt = 0;                  ///< ground-truth instances (non-crowd annotations of the category)
  int dt = 0;                  ///< predictions kept (score >= threshold)
  std::vector<double> ious;    ///< IoU of each matched (gt, dt) pair, descending
};

/// Matches kept predictions `dt` to ground truth `gt` (same image size): Hungarian assignment
/// maximising the summed IoU (deterministic ties), min(|gt|, |dt|) pairs.
CgF1Pair match_pair(const std::vector<Rle>& gt, const std::vector<Rle>& dt);

/// The ten IoU thresholds 0.50:0.05:0.95.
std::array<double, 10> cgf1_thresholds();

struct CgF1Result {
  double cgf1 = 0;                   ///< mean over thresholds of pmF1_t x IL_MCC
  double pmf1 = 0;                   ///< mean over thresholds of pmF1_t
  double il_mcc = 0;                 ///< image-level MCC (0 when a marginal is empty)
  std::array<double, 10> pmf1_t{};   ///< pmF1 at each threshold
  int64_t pairs = 0, positive_pairs = 0;
  int64_t il_tp = 0, il_fp = 0, il_fn = 0, il_tn = 0;
};

/// Aggregates matched pairs into cgF1 (all-zero result for no pairs).
CgF1Result cgf1(const std::vector<CgF1Pair>& pairs);

/// The phrases evaluated for one image: every category with a non-crowd annotation (present), then
/// `n_absent` categories of `candidates` with no annotation in the image at all, drawn without
/// replacement by a generator seeded with (seed, image id) so every run and every model sees the
/// same ones. `candidates` ascending (e.g. the categories the concept bank knows). Returns category
/// ids, ascending.
std::vector<int> cgf1_categories(const CocoDataset& ds, const CocoImageRecord& img, const std::vector<int>& candidates,
                                 int n_absent, uint64_t seed);

/// Ground-truth masks of a category in an image for cgF1 (non-crowd annotations).
std::vector<Rle> cgf1_ground_truth(const CocoDataset& ds, const CocoImageRecord& img, int category_id);

}  // namespace instinct::eval
