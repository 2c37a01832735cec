#include "instinct/eval/prompt_model.h"

#include <torch/torch.h>

#include <cmath>
#include <set>

#include "instinct/common/error.h"
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
    const int s = student_->config().img_size;
    auto x = pixels.size(2) == s ? pixels
                                 : torch::nn::functional::interpolate(
                                       pixels, torch::nn::functional::InterpolateFuncOptions()
                                                   .size(std::vector<int64_t>{s, s})
                                                   .mode(torch::kBilinear)
                                                   .align_corners(false));
    feats = const_cast<model::StudentTrunkImpl&>(*student_).forward(x);
  } else {
    feats = bundle_->trunk(pixels);
  }
  ImageFeatures f;
  std::tie(f.fpn0, f.fpn1, f.fpn2) = bundle_->detector_neck(feats);
  std::tie(f.emb, f.s0, f.s1) = bundle_->interactive_neck(feats);
  return f;
}

PromptMasks PromptModel::prompt(const ImageFeatures& f, const at::Tensor& idx, const at::Tensor& points,
                                const at::Tensor& labels) const {
  auto out = bundle_->sam_head(f.emb.index_select(0, idx), f.s0.index_select(0, idx), f.s1.index_select(0, idx),
                               points, labels);
  auto best = out.iou.argmax(1);  // (P,)
  auto ar = torch::arange(best.size(0), best.options());
  PromptMasks r;
  r.logits = out.masks.index({ar, best});
  r.score = out.iou.index({ar, best});
  return r;
}

ConceptInstances PromptModel::concept_instances(const ImageFeatures& f, const at::Tensor& idx,
                                                const at::Tensor& ids) const {
  auto [text, pad] = bundle_->concepts(ids);
  auto g = bundle_->grounding(f.fpn0.index_select(0, idx), f.fpn1.index_select(0, idx), f.fpn2.index_select(0, idx),
                              text, pad);
  return {g.masks, torch::sigmoid(g.logits.squeeze(-1)) * torch::sigmoid(g.presence)};
}

PromptMasks PromptModel::concept(const ImageFeatures& f, const at::Tensor& idx, const at::Tensor& ids,
                                 double threshold) const {
  auto all = concept_instances(f, idx, ids);
  auto top = all.score.argmax(1);
  auto ar = torch::arange(top.size(0), top.options());
  PromptMasks r;
  r.logits = all.logits.index({ar, top});
  r.score = all.score.index({ar, top});
  r.kept = r.score >= threshold;
  return r;
}

}  // namespace instinct::eval
