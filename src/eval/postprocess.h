#pragma once
// Post-processing of grounding (concept) and interactive (box / point) outputs into what the metrics
// score, as SAM3's image inference does it (sam3/model/sam3_image_processor.py
// Sam3Processor._forward_grounding, sam3/eval/postprocessors.py PostProcessImage, and for box /
// point prompts sam3/model/sam1_task_predictor.py); checked against that code by
// tests/unit/test_sam3_parity.cpp.
//  - concept instance score = sigmoid(logit) x sigmoid(presence);
//  - mask logits over the network input are bilinearly upsampled (align_corners = false, fp32) to the
//    original image size; a concept pixel is on where sigmoid(logit) > 0.5 in fp32 (SAM3's rule: off
//    for logits in (0, ~1.2e-7], where the fp32 sigmoid rounds to 0.5), a box / point pixel where
//    logit > 0 (SAM's mask_threshold 0);
//  - concept boxes, cxcywh in [0,1] of the network input -> x0, y0, x1, y1 in original pixels (no
//    clamping).
#include <ATen/core/Tensor.h>

#include <array>

#include "instinct/eval/coco_mask.h"

namespace instinct::eval {

/// How an original h x w image maps onto the S x S network input: its content (ch, cw) sits at the
/// top-left. `squash` resizing (SAM3) has ch = cw = S; `longest_pad` (SAM) scales the longest side to
/// S and pads the rest (pad = true).
struct InputGeometry {
  int h = 0, w = 0;    ///< original size
  int ch = 0, cw = 0;  ///< content size inside the network input
  int S = 0;           ///< network input side
  bool pad = false;    ///< longest_pad: crop the content before the final upsampling
  double sx() const { return double(cw) / w; }
  double sy() const { return double(ch) / h; }
};

/// Concept instance scores sigmoid(logits) x sigmoid(presence): logits (P,Q) or (P,Q,1), presence
/// (P) or (P,1) -> (P,Q), in the logits' dtype.
at::Tensor concept_scores(const at::Tensor& logits, const at::Tensor& presence);

/// Which pixels of the upsampled logits are on.
enum class MaskRule {
  logit_positive,  ///< logit > 0 (SAM's interactive predictor, box / point prompts)
  sigmoid_half,    ///< sigmoid(logit) > 0.5 in fp32 (SAM3's concept post-processing)
};

/// Mask logits (M,M) over the network input -> the binary mask at the original size as RLE.
/// Squash: one bilinear upsampling to (h, w); longest_pad: to S x S, crop (ch, cw), then to (h, w).
Rle mask_logits_to_rle(const at::Tensor& logits, const InputGeometry& g, MaskRule rule);

/// A box cxcywh in [0,1] of the network input -> {x0, y0, x1, y1} in original pixels.
std::array<double, 4> box_to_original_xyxy(const std::array<double, 4>& cxcywh, const InputGeometry& g);

}  // namespace instinct::eval
