#pragma once
// The feature-distillation loss: Stage A's objective and concept distillation's trunk regulariser.
//
// loss = w_cos * mean_valid(1 - cos_c(S, T)) + w_mse * mean_valid(sum_c (S - T)^2)
// where cos_c is the cosine over channels at each location, and "valid" excludes padded locations
// (longest_pad preprocessing). See docs/stageA.md.
#include <ATen/Tensor.h>

namespace instinct::distill {

/// Feature-loss weights (Stage A's `loss` block).
struct FeatureLossConfig {
  double w_cos = 1.0;
  double w_mse = 1.0;
  template <class V>
  void visit(V& v) {
    v("w_cos", w_cos, "weight of mean(1 - channel cosine)");
    v("w_mse", w_mse, "weight of mean over valid locations of sum over channels of squared error");
  }
};

/// Per-batch feature-loss terms (0-dim fp32 tensors).
struct FeatureLoss {
  at::Tensor total, cos_term, mse_term, cosine;  ///< cosine = mean valid channel cosine (detached)
};

/// Computes the feature loss in fp32. `student`, `teacher`: (B,C,G,G); `valid`: (B,G,G) bool or
/// undefined (all valid). Mismatched shapes are an error naming both.
FeatureLoss feature_loss(const at::Tensor& student, const at::Tensor& teacher, const at::Tensor& valid,
                         const FeatureLossConfig& cfg);

/// Pixel-level valid mask (B,S,S) -> grid-level (B,G,G): a location is valid when more than half of
/// its cell is valid.
at::Tensor grid_valid_mask(const at::Tensor& pixel_valid, int grid);

}  // namespace instinct::distill
