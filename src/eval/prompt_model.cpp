#include "eval/prompt_model.h"

#include <torch/torch.h>

#include <cmath>
#include <set>

#include "instinct/common/error.h"
#include "eval/postprocess.h"
#include "instinct/model/trunk_io.h"

namespace instinct::eval {

PromptModel::PromptModel(std::string name, std::shared_ptr<const teacher::TeacherBundle> bundle)
    : name_(std::move(name)), bundle_(std::move(bundle)) {}

PromptModel::PromptModel(std::string name, std::shared_ptr<const teacher::TeacherBundle> bundle,
                         const std::string& trunk_path, const at::Device& device)
    : name_(std::move(name)), bundle_(std::move(bundle)) {
  auto sd = model::read_trunk_state(trunk_path);
  auto cfg = model::infer_student_config(sd, bundle_->info().trunk_grid);
  INSTINCT_CHECK(cfg.out_channels == bundle_->info().trunk_channels, trunk_path, ": student outputs ", cfg.out_channels,
                 " channels but the teacher bundle's heads expect ", bundle_->info().trunk_channels);
  student_ = model::StudentTrunk(cfg);
  model::load_state_dict_strict(*student_, sd, trunk_path);
  student_->to(device);
  student_->eval();
}

int64_t PromptModel::trunk_parameters() const {
  return student_ ? model::num_parameters(*student_) : bundle_->num_parameters("trunk");
}

ImageFeatures PromptModel::encode(const at::Tensor& pixels) const {
  at::Tensor feats;
  if (student_) {
    feats = const_cast<model::StudentTrunkImpl&>(*student_).forward_resized(pixels);
  } else {
    feats = bundle_->trunk(pixels);
  }
  ImageFeatures f;
  std::tie(f.fpn0, f.fpn1, f.fpn2) = bundle_->detector_neck(feats);
  std::tie(f.emb, f.s0, f.s1) = bundle_->interactive_neck(feats);
  return f;
}

PromptMasks PromptModel::prompt(const ImageFeatures& f, const at::Tensor& idx, const at::Tensor& points,
                                const at::Tensor& labels, const std::string& mask_choice) const {
  auto out = bundle_->sam_head(f.emb.index_select(0, idx), f.s0.index_select(0, idx), f.s1.index_select(0, idx),
                               points, labels);
  const auto& sh = bundle_->info().sam_head;
  auto best = out.iou.argmax(1);  // (P,)
  auto ar = torch::arange(best.size(0), best.options());
  PromptMasks r;
  r.logits = out.masks.index({ar, best});
  r.score = out.iou.index({ar, best});
  if (mask_choice == "single") {
    INSTINCT_CHECK(out.single_masks.defined(), "protocol.mask_choice=single needs the SAM head's single-mask output, "
                   "but teacher bundle ", bundle_->info().dir, " has none (sam_head.mask_tokens = ",
                   sh.mask_tokens, "; re-export it with scripts/export_sam3.py)");
    auto stable = (mask_stability(out.single_masks, sh.stability_delta) >= sh.stability_thresh).view({-1, 1, 1});
    r.logits = torch::where(stable, out.single_masks, r.logits);
    r.score = torch::where(stable.view({-1}), out.single_iou, r.score);
  } else {
    INSTINCT_CHECK(mask_choice == "best_iou", "unknown mask choice '", mask_choice, "' (valid: best_iou, single)");
  }
  if (sh.fill_hole_area > 0) {
    auto cpu = r.logits.to(torch::kCPU, torch::kFloat).contiguous().clone();
    fill_mask_holes(cpu, sh.mask_threshold, sh.fill_hole_area);
    r.logits = cpu.to(r.logits.device(), r.logits.scalar_type());
  }
  return r;
}

at::Tensor mask_stability(const at::Tensor& logits, double delta) {
  auto inter = (logits > delta).flatten(-2).sum(-1).to(torch::kFloat);
  auto uni = (logits > -delta).flatten(-2).sum(-1).to(torch::kFloat);
  return torch::where(uni > 0, inter / uni.clamp_min(1), torch::ones_like(uni));
}

void fill_mask_holes(at::Tensor& logits, float threshold, int max_area) {
  if (max_area <= 0 || logits.numel() == 0) return;
  INSTINCT_ASSERT(logits.device().is_cpu() && logits.scalar_type() == torch::kFloat && logits.is_contiguous() &&
                  logits.dim() == 3);
  const int64_t P = logits.size(0), H = logits.size(1), W = logits.size(2);
  std::vector<int32_t> label(size_t(H * W));
  std::vector<int64_t> stack, members;
  for (int64_t p = 0; p < P; ++p) {
    float* m = logits[p].data_ptr<float>();
    std::fill(label.begin(), label.end(), 0);
    int32_t next = 0;
    for (int64_t start = 0; start < H * W; ++start) {
      if (label[size_t(start)] || m[start] > threshold) continue;
      // one background component, 8-connected (skimage.measure.label's default in 2-D)
      ++next;
      members.clear();
      stack.assign(1, start);
      label[size_t(start)] = next;
      while (!stack.empty()) {
        const int64_t i = stack.back();
        stack.pop_back();
        members.push_back(i);
        const int64_t y = i / W, x = i % W;
        for (int64_t dy = -1; dy <= 1; ++dy)
          for (int64_t dx = -1; dx <= 1; ++dx) {
            const int64_t yy = y + dy, xx = x + dx;
            if ((dy == 0 && dx == 0) || yy < 0 || yy >= H || xx < 0 || xx >= W) continue;
            const int64_t j = yy * W + xx;
            if (label[size_t(j)] || m[j] > threshold) continue;
            label[size_t(j)] = next;
            stack.push_back(j);
          }
      }
      if (int64_t(members.size()) <= max_area)
        for (int64_t i : members) m[i] = threshold + 10.0f;
    }
  }
}

ConceptInstances PromptModel::concept_instances(const ImageFeatures& f, const at::Tensor& idx, const at::Tensor& text,
                                                const at::Tensor& pad) const {
  auto g = bundle_->grounding(f.fpn0.index_select(0, idx), f.fpn1.index_select(0, idx), f.fpn2.index_select(0, idx),
                              text, pad);
  return {g.masks, concept_scores(g.logits, g.presence), g.boxes};
}

PromptMasks PromptModel::concept(const ImageFeatures& f, const at::Tensor& idx, const at::Tensor& text,
                                 const at::Tensor& pad, double threshold) const {
  auto all = concept_instances(f, idx, text, pad);
  auto top = all.score.argmax(1);
  auto ar = torch::arange(top.size(0), top.options());
  PromptMasks r;
  r.logits = all.logits.index({ar, top});
  r.score = all.score.index({ar, top});
  r.kept = r.score >= threshold;
  r.boxes = all.boxes.index({ar, top});
  return r;
}

}  // namespace instinct::eval
