#pragma once
// A model under evaluation: a vision trunk (the teacher's own, or a student trunk) feeding the teacher
// bundle's necks and heads. The trunk and necks run once per image; every box / point / concept
// prompt of that image reuses the features.
#include <ATen/Tensor.h>

#include <memory>
#include <string>

#include "instinct/model/vit.h"
#include "instinct/teacher/bundle.h"

namespace instinct::eval {

/// Necks' outputs for a batch of images (see docs/teacher-bundle.md).
struct ImageFeatures {
  at::Tensor fpn0, fpn1, fpn2;  ///< detector neck
  at::Tensor emb, s0, s1;       ///< interactive neck
};

/// Masks chosen for a batch of prompts.
struct PromptMasks {
  at::Tensor logits;  ///< (P,M,M) mask logits over the network input
  at::Tensor score;   ///< (P,) box/point: predicted IoU of the chosen output; concept: instance score
  at::Tensor kept;    ///< (P,) bool: concept prompts only, whether the top instance passed the threshold
};

/// Every query of a batch of concept prompts.
struct ConceptInstances {
  at::Tensor logits;  ///< (P,Q,M,M) mask logits over the network input
  at::Tensor score;   ///< (P,Q) sigmoid(logit) x sigmoid(presence)
};

class PromptModel {
 public:
  /// The teacher itself: the bundle's trunk.
  PromptModel(std::string name, std::shared_ptr<const teacher::TeacherBundle> bundle);
  /// A student trunk file (our checkpoint or InstinctSAM's) with the bundle's necks and heads.
  PromptModel(std::string name, std::shared_ptr<const teacher::TeacherBundle> bundle, const std::string& trunk_path,
              const at::Device& device);

  const std::string& name() const { return name_; }
  /// Trunk parameter count (the student's incl. adapter; the teacher's trunk module).
  int64_t trunk_parameters() const;
  /// pixels (B,3,S,S) normalised -> features of both necks.
  ImageFeatures encode(const at::Tensor& pixels) const;
  /// Point/box prompts: image index into the batch (P,), points (P,N,2) in network-input pixels,
  /// labels (P,N). Chooses the multimask output with the highest predicted IoU.
  PromptMasks prompt(const ImageFeatures& f, const at::Tensor& image_index, const at::Tensor& points,
                     const at::Tensor& labels) const;
  /// Concept prompts: image index (P,), concept ids (P,) into the bundle's concept bank. The top
  /// query by sigmoid(logit) x sigmoid(presence) is returned; kept = score >= threshold.
  PromptMasks concept(const ImageFeatures& f, const at::Tensor& image_index, const at::Tensor& concept_ids,
                      double threshold) const;
  /// Concept prompts with every query's mask and score (cgF1).
  ConceptInstances concept_instances(const ImageFeatures& f, const at::Tensor& image_index,
                                     const at::Tensor& concept_ids) const;

 private:
  std::string name_;
  std::shared_ptr<const teacher::TeacherBundle> bundle_;
  model::StudentTrunk student_{nullptr};
};

}  // namespace instinct::eval
