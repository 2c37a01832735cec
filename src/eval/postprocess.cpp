#include "eval/postprocess.h"

#include <torch/torch.h>

#include "instinct/common/error.h"
#include "common/tensor_ops.h"

namespace instinct::eval {
at::Tensor concept_scores(const at::Tensor& logits, const at::Tensor& presence) {
  auto l = logits.dim() == 3 ? logits.squeeze(-1) : logits;
  INSTINCT_CHECK(l.dim() == 2 && presence.numel() == l.size(0), "concept_scores: expected logits (P,Q[,1]) and presence (P[,1]), got ",
                 logits.sizes(), " and ", presence.sizes());
  return torch::sigmoid(l) * torch::sigmoid(presence.reshape({l.size(0), 1}).to(l.scalar_type()));
}

Rle mask_logits_to_rle(const at::Tensor& logits, const InputGeometry& g, MaskRule rule) {
  INSTINCT_CHECK(logits.dim() == 2, "mask_logits_to_rle: expected (M,M) logits, got ", logits.sizes());
  auto x = logits.to(torch::kFloat).unsqueeze(0).unsqueeze(0);
  if (g.pad) x = resize_bilinear(x, g.S, g.S).narrow(2, 0, g.ch).narrow(3, 0, g.cw);
  x = resize_bilinear(x, g.h, g.w).squeeze(0).squeeze(0);
  auto m = (rule == MaskRule::sigmoid_half ? x.sigmoid() > 0.5 : x > 0).to(torch::kUInt8).contiguous().cpu();
  return rle_encode(m.data_ptr<uint8_t>(), g.h, g.w);
}

std::array<double, 4> box_to_original_xyxy(const std::array<double, 4>& b, const InputGeometry& g) {
  // Network-input fractions -> original pixels: x w for squash (SAM3's scale_fct), through the content for longest_pad.
  const double kx = g.pad ? g.S / g.sx() : g.w, ky = g.pad ? g.S / g.sy() : g.h;
  return {(b[0] - 0.5 * b[2]) * kx, (b[1] - 0.5 * b[3]) * ky, (b[0] + 0.5 * b[2]) * kx, (b[1] + 0.5 * b[3]) * ky};
}

}  // namespace instinct::eval
