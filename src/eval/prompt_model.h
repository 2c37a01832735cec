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
  at::Tensor boxes;   ///< (P,4) concept prompts only: the top instance's box, cxcywh in [0,1] of the network input
};

/// Every query of a batch of concept prompts.
struct ConceptInstances {
  at::Tensor logits;  ///< (P,Q,M,M) mask logits over the network input
  at::Tensor score;   ///< (P,Q) sigmoid(logit) x sigmoid(presence)
  at::Tensor boxes;   ///< (P,Q,4) cxcywh in [0,1] of the network input
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
  /// labels (P,N). mask_choice "best_iou": the multimask output with the highest predicted IoU;
  /// "single": SAM3's multimask_output=False (the single-mask output unless its stability score
  /// is below the bundle's threshold, then the best multimask output; needs sam_head.mask_tokens 4).
  /// Then the bundle's hole filling (sam_head.fill_hole_area) as SAM3's predictor post-processes.
  PromptMasks prompt(const ImageFeatures& f, const at::Tensor& image_index, const at::Tensor& points,
                     const at::Tensor& labels, const std::string& mask_choice = "best_iou") const;
  /// Concept prompts: image index (P,) and the phrases' prompt tokens text (P,L,D) / text_pad (P,L)
  /// (teacher::encode_phrases). The top query by sigmoid(logit) x sigmoid(presence) is returned;
  /// kept = score >= threshold.
  PromptMasks concept(const ImageFeatures& f, const at::Tensor& image_index, const at::Tensor& text,
                      const at::Tensor& text_pad, double threshold) const;
  /// Concept prompts with every query's mask and score (cgF1).
  ConceptInstances concept_instances(const ImageFeatures& f, const at::Tensor& image_index, const at::Tensor& text,
                                     const at::Tensor& text_pad) const;

 private:
  std::string name_;
  std::shared_ptr<const teacher::TeacherBundle> bundle_;
  model::StudentTrunk student_{nullptr};
};

/// SAM3's predictor post-processing on low-resolution mask logits (P,M,M), in place on a CPU float
/// tensor: every 8-connected component of pixels with logit <= threshold whose area is at most
/// max_area is set to threshold + 10 (a filled hole). No-op when max_area <= 0.
void fill_mask_holes(at::Tensor& logits, float threshold, int max_area);

/// SAM's stability score of mask logits (..., M, M): |logit > delta| / |logit > -delta| (1 when empty).
at::Tensor mask_stability(const at::Tensor& logits, double delta);

}  // namespace instinct::eval
