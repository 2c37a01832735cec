#pragma once
// Matcher and losses of concept self-distillation (`instinct-train concept`): the teacher's
// filtered grounding predictions are the targets; see ../shared/reference/distillation.md
// ("Concept self-distillation", "CLoCKDistill", "Region-text alignment") and the grounding outputs
// in docs/teacher-bundle.md.
//
// Vocabulary. A *pair* is one (image, concept) prompt; a batch holds P pairs, the student predicts
// Q queries per pair. For pair p the teacher supplies T_p kept targets (T_p may be 0), passed as
// a std::vector of P per-pair tensors. hungarian_match() assigns student queries to teacher
// targets; the losses take the resulting matches.
//
// Conventions shared by every function here:
//  - pure functions: no state, no randomness except mask point sampling (explicit generator);
//  - device-agnostic: inputs may be CPU or CUDA (all on the student's device); the Hungarian cost is
//    built and solved on the CPU in double precision, the loss math stays on the inputs' device;
//  - precision: losses are computed in fp32 (bf16/fp16 inputs are upcast; fp64 inputs stay fp64,
//    which the parity tests use) and returned as 0-dim tensors of that dtype;
//  - gradients flow to the student arguments only; every teacher argument is detached;
//  - no matches (all T_p = 0, or P = 0) gives a 0-dim zero that is still connected to the student
//    input's graph (backward() works and yields zero gradients, even for non-finite inputs);
//  - bad shapes or indices throw instinct::Error naming the argument and the shape found.
#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <utility>
#include <vector>

namespace instinct::distill {

// ------------------------------------------------------------------------------------------------
// Boxes

/// Smallest box side (in box units) used inside GIoU: x2 is raised to at least x1 + kMinBoxSide
/// (same for y), so zero-width/height or inverted boxes give finite GIoU and gradients.
constexpr double kMinBoxSide = 1e-6;

/// (..., 4) boxes (cx, cy, w, h) -> (x1, y1, x2, y2). Plain arithmetic, no clamping; keeps dtype
/// and autograd.
at::Tensor box_cxcywh_to_xyxy(const at::Tensor& boxes);

/// Pairwise generalized IoU of xyxy boxes a (N,4) and b (M,4) -> (N,M), as
/// torchvision.ops.generalized_box_iou for valid boxes. Degenerate boxes are widened to
/// kMinBoxSide and union / enclosing areas floored at 1e-12, so the result is never NaN for finite
/// inputs. Computed in fp32 (fp64 if either input is fp64); differentiable.
at::Tensor generalized_box_iou(const at::Tensor& a, const at::Tensor& b);

/// Elementwise GIoU of matched xyxy boxes a (N,4) and b (N,4) -> (N,), same rules as above.
at::Tensor generalized_box_iou_paired(const at::Tensor& a, const at::Tensor& b);

// ------------------------------------------------------------------------------------------------
// Matching

/// Hungarian matching cost (SAM3 / DETR defaults):
///   C[q,t] = w_class * focal(q) + w_l1 * |b_q - b_t|_1 (cxcywh) + w_giou * (-GIoU(b_q, b_t))
/// with the binary focal class cost, p = sigmoid(logit_q), written in log-sigmoid form:
///   focal(q) = alpha (1-p)^gamma softplus(-logit) - (1-alpha) p^gamma softplus(logit).
/// Non-finite entries (NaN boxes or logits, overflow) are replaced by invalid_cost.
struct MatchCost {
  double w_class = 2;          ///< weight of the focal class cost
  double w_l1 = 5;             ///< weight of the L1 distance on cxcywh boxes
  double w_giou = 2;           ///< weight of -GIoU
  double focal_alpha = 0.25;   ///< focal alpha
  double focal_gamma = 2;      ///< focal gamma
  double invalid_cost = 1e8;   ///< finite stand-in for non-finite cost entries
};

/// Matches of one pair: (student query, teacher target) index pairs, sorted by query; each query
/// and each target appears at most once; size min(Q, T).
using Match = std::vector<std::pair<int64_t, int64_t>>;

/// The (Q,T) matching cost matrix (fp64, CPU) for one pair: student logits (Q) or (Q,1), student
/// boxes (Q,4) cxcywh, teacher boxes (T,4) cxcywh (T may be 0; a 0-element tensor counts as T = 0).
/// Every entry is finite.
at::Tensor match_cost_matrix(const at::Tensor& student_logits, const at::Tensor& student_boxes,
                             const at::Tensor& teacher_boxes, const MatchCost& cfg = {});

/// Minimum-cost assignment of student queries to teacher targets for one pair (exact, via
/// instinct::linear_sum_assignment on match_cost_matrix). T = 0 or Q = 0 gives an empty match.
Match hungarian_match(const at::Tensor& student_logits, const at::Tensor& student_boxes,
                      const at::Tensor& teacher_boxes, const MatchCost& cfg = {});

/// hungarian_match for a batch: logits (P,Q) or (P,Q,1), boxes (P,Q,4), teacher_boxes[p] (T_p,4).
/// Copies the student tensors and the concatenated teacher boxes to the CPU once each.
std::vector<Match> hungarian_match_batch(const at::Tensor& student_logits, const at::Tensor& student_boxes,
                                         const std::vector<at::Tensor>& teacher_boxes,
                                         const MatchCost& cfg = {});

/// Total number of matched (query, target) pairs.
int64_t num_matches(const std::vector<Match>& matches);

/// Rows of a per-query tensor x (P,Q,...) for every match, in match order (pair-major, then by
/// query) -> (K,...). E.g. the matched student query embeddings for region_text_loss.
at::Tensor gather_matched(const at::Tensor& x, const std::vector<Match>& matches);

// ------------------------------------------------------------------------------------------------
// Losses. `num_boxes` (> 0) overrides the normaliser K = num_matches (e.g. a count all-reduced
// across ranks); with K = 0 and no override the loss is the connected zero.

/// Box regression terms, each already divided by the normaliser.
struct BoxLoss {
  at::Tensor l1;    ///< sum over matches of |b_s - b_t|_1 (4 cxcywh coordinates) / K
  at::Tensor giou;  ///< sum over matches of (1 - GIoU(b_s, b_t)) / K
};

/// Box losses on matched queries: student_boxes (P,Q,4) cxcywh, teacher_boxes[p] (T_p,4) cxcywh.
BoxLoss box_loss(const at::Tensor& student_boxes, const std::vector<at::Tensor>& teacher_boxes,
                 const std::vector<Match>& matches, double num_boxes = 0);

/// Per-pixel term of mask_loss.
enum class MaskLossKind { bce, focal };

/// Mask loss settings. SAM3 weights: focal 200, dice 10 (applied by the caller).
struct MaskLossConfig {
  MaskLossKind kind = MaskLossKind::bce;  ///< per-pixel term: BCE-with-logits or sigmoid focal
  double focal_alpha = 0.25;              ///< focal alpha (kind = focal)
  double focal_gamma = 2;                 ///< focal gamma (kind = focal)
  int64_t num_points = 0;                 ///< > 0: evaluate on this many random points per mask
};

/// Mask terms, each already divided by the normaliser.
struct MaskLoss {
  at::Tensor mask;  ///< sum over matches of the per-mask mean BCE (or focal) / K
  at::Tensor dice;  ///< sum over matches of dice_loss / K
};

/// Mask losses on matched queries against the teacher's soft masks g = sigmoid(teacher logits):
///   student_masks (P,Q,H,W) logits, teacher_masks[p] (T_p,H',W') logits.
///   bce:   mean over pixels of BCE(sigmoid(s), g) (BCE-with-logits);
///   focal: mean over pixels of BCE * (1 - p_t)^gamma * alpha_t with p_t = p g + (1-p)(1-g),
///          alpha_t = alpha g + (1-alpha)(1-g) (torchvision.ops.sigmoid_focal_loss with soft g);
///   dice:  1 - (2 sum(p g) + 1) / (sum p + sum g + 1), p = sigmoid(s).
/// Full-resolution mode (no points) requires H' = H and W' = W. Point mode: each matched mask is
/// evaluated at S points (x, y) in [0,1]^2 (x along W), sampled bilinearly from both logit maps
/// (grid_sample, align_corners = false, border padding; the maps may differ in size). The points
/// are `points` (K,S,2) when given, else cfg.num_points uniform points per match drawn with
/// `generator` (on the generator's device, then moved; undefined = the global default generator
/// of the masks' device).
MaskLoss mask_loss(const at::Tensor& student_masks, const std::vector<at::Tensor>& teacher_masks,
                   const std::vector<Match>& matches, const MaskLossConfig& cfg = {},
                   at::Generator generator = {}, const at::Tensor& points = {}, double num_boxes = 0);

/// Per-mask dice loss: logits (K,N), target probabilities (K,N) -> (K,)
/// 1 - (2 sum(sigmoid(l) g) + 1) / (sum sigmoid(l) + sum g + 1).
at::Tensor dice_loss(const at::Tensor& logits, const at::Tensor& targets);

/// Bilinear samples of maps (K,H,W) at points (K,S,2) in [0,1]^2 -> (K,S) (see mask_loss).
at::Tensor point_sample(const at::Tensor& maps, const at::Tensor& points);

/// Class-logit distillation settings.
struct ClassKdConfig {
  double temperature = 1;        ///< T: logits divided by T, loss multiplied by T^2
  double w_unmatched = 1;        ///< weight of the "no object" term on unmatched queries
  bool confidence_weight = true; ///< weight matched queries by the teacher probability
  bool presence_gate = true;     ///< multiply each pair's loss by sigmoid(teacher presence)
};

/// Soft-target class distillation over all P*Q student queries:
///   L = 1/(P Q) * sum_p g_p * sum_q w_pq * T^2 * BCE(sigmoid(s_pq / T), y_pq)
/// where BCE(p, y) = -(y log p + (1-y) log(1-p)) (computed from logits), and
///   matched q -> target t: y = sigmoid(t_t / T), w = sigmoid(t_t) (1 without confidence_weight);
///   unmatched q:           y = 0,                w = w_unmatched;
///   g_p = sigmoid(teacher_presence_p) (1 without presence_gate).
/// student_logits (P,Q) or (P,Q,1); teacher_logits[p] (T_p) or (T_p,1): the logits of the kept
/// teacher targets, indexed like the matches; teacher_presence (P) or (P,1) logits (may be
/// undefined when presence_gate is off).
at::Tensor class_kd_loss(const at::Tensor& student_logits, const std::vector<at::Tensor>& teacher_logits,
                         const at::Tensor& teacher_presence, const std::vector<Match>& matches,
                         const ClassKdConfig& cfg = {});

/// Presence distillation: mean over pairs of T^2 * BCE(sigmoid(s/T), sigmoid(t/T)); student and
/// teacher presence logits (P) or (P,1).
at::Tensor presence_kd_loss(const at::Tensor& student_presence, const at::Tensor& teacher_presence,
                            double temperature = 1);

/// CLoCKDistill memory loss settings (reference values are for multi-scale DETR memory:
/// calibrate so the term starts at 0.1-1x the detection KD loss).
struct ClockConfig {
  double alpha = 5e-5;   ///< foreground weight
  double beta = 1e-7;    ///< background weight
  int64_t grid_h = 0;    ///< memory grid height; 0 with grid_w = 0: square grid sqrt(N)
  int64_t grid_w = 0;    ///< memory grid width
};

/// Per-token weights (N,B) of clock_memory_loss, fp32 (also for fp64 memory) on `device` (tokens row-major, y*W + x).
/// Token (x, y) has its cell centre at ((x+0.5)/W, (y+0.5)/H); it is foreground when the centre
/// lies inside (edges included) any of batch element b's boxes (cxcywh in [0,1]). A foreground
/// token gets alpha / A_k with A_k = max(1, (w_k W)(h_k H)) the area in tokens of the smallest
/// containing box; a background token gets beta / N_bg (N_bg = background tokens of b).
at::Tensor clock_weights(int64_t num_tokens, const std::vector<at::Tensor>& teacher_boxes,
                         const ClockConfig& cfg, at::Device device);

/// CLoCKDistill memory loss: student/teacher memory (N,B,D) sequence-first, teacher_boxes[b]
/// (T_b,4) cxcywh in [0,1] (T_b may be 0: all background).
///   L = 1/B * sum_b sum_n W[n,b] * ||A_T[n,b] - A_S[n,b]||^2 with W = clock_weights(...).
at::Tensor clock_memory_loss(const at::Tensor& student_memory, const at::Tensor& teacher_memory,
                             const std::vector<at::Tensor>& teacher_boxes, const ClockConfig& cfg = {});

/// Mean of text token embeddings over non-padding positions: text (C,L,D), pad (C,L) bool with
/// true = padding (the grounding module's text_pad) -> (C,D); an all-padding row gives zeros.
at::Tensor pool_text_embeddings(const at::Tensor& text, const at::Tensor& pad);

/// InfoNCE over concepts: h (K,D) region embeddings (already projected by the caller), concepts
/// (C,D) (detached), concept_ids (K) int64 in [0,C):
///   L = 1/K sum_i -log softmax_c(<h_i/|h_i|, p_c/|p_c|> / tau)[concept_ids_i].
at::Tensor info_nce_loss(const at::Tensor& h, const at::Tensor& concepts, const at::Tensor& concept_ids,
                         double tau = 0.07);

/// Region-text alignment for matched queries: query_emb (P,Q,D) projected student query
/// embeddings, pair_concept (P) int64 concept index of each pair into concepts (C,D):
/// info_nce_loss(gather_matched(query_emb, matches), concepts, pair_concept of each match, tau).
at::Tensor region_text_loss(const at::Tensor& query_emb, const std::vector<Match>& matches,
                            const at::Tensor& pair_concept, const at::Tensor& concepts, double tau = 0.07);

}  // namespace instinct::distill
