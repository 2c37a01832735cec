#include "instinct/distill/feature_loss.h"

#include <torch/torch.h>

#include "instinct/common/error.h"

namespace instinct::distill {

FeatureLoss feature_loss(const at::Tensor& student, const at::Tensor& teacher, const at::Tensor& valid,
                         const FeatureLossConfig& cfg) {
  INSTINCT_CHECK(student.sizes() == teacher.sizes(), "feature loss: student features ", student.sizes(),
                 " do not match teacher features ", teacher.sizes());
  auto s = student.to(torch::kFloat), t = teacher.to(torch::kFloat);
  auto cos = torch::cosine_similarity(s, t, 1, 1e-8);  // (B,G,G)
  auto se = (s - t).pow(2).sum(1);                       // (B,G,G)
  FeatureLoss out;
  if (valid.defined()) {
    auto w = valid.to(torch::kFloat);
    auto n = w.sum().clamp_min(1.0);
    out.cos_term = ((1 - cos) * w).sum() / n;
    out.mse_term = (se * w).sum() / n;
    out.cosine = ((cos * w).sum() / n).detach();
  } else {
    out.cos_term = (1 - cos).mean();
    out.mse_term = se.mean();
    out.cosine = cos.mean().detach();
  }
  out.total = cfg.w_cos * out.cos_term + cfg.w_mse * out.mse_term;
  return out;
}

at::Tensor grid_valid_mask(const at::Tensor& pixel_valid, int grid) {
  auto v = pixel_valid.to(torch::kFloat).unsqueeze(1);
  return torch::adaptive_avg_pool2d(v, {grid, grid}).squeeze(1) > 0.5;
}

}  // namespace instinct::distill
