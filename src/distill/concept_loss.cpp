#include "instinct/distill/concept_loss.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "common/assignment.h"
#include "instinct/common/error.h"

namespace instinct::distill {
namespace {

// Loss precision: fp64 stays fp64 (parity tests), everything else computes in fp32.
at::ScalarType loss_dtype(const at::Tensor& x) {
  return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}
at::Tensor upcast(const at::Tensor& x) { return x.to(loss_dtype(x)); }

// 0-dim zero connected to x's graph, finite even when x holds NaN.
at::Tensor connected_zero(const at::Tensor& x) { return upcast(x).reshape({-1}).narrow(0, 0, 0).sum(); }

// Accepts (T,4) or any 0-element tensor (T = 0).
at::Tensor boxes_arg(const at::Tensor& b, const char* what) {
  INSTINCT_CHECK(b.defined(), what, ": undefined tensor, expected (T,4) boxes");
  if (b.numel() == 0) return b.reshape({0, 4});
  INSTINCT_CHECK(b.dim() == 2 && b.size(1) == 4, what, ": expected (T,4) boxes, got ", b.sizes());
  return b;
}

void check_batch(const std::vector<Match>& matches, size_t p, const char* what) {
  INSTINCT_CHECK(matches.size() == p, what, ": ", matches.size(), " matches for ", p, " pairs");
}

// Flat indices of the matches: student row p*Q + q, teacher row offset_p + t into the concatenated
// per-pair targets (sizes given by `targets`).
struct MatchIndex {
  at::Tensor student, teacher;
  int64_t count = 0;
};

at::Tensor long_tensor(const std::vector<int64_t>& v, at::Device device) {
  if (v.empty()) return at::empty({0}, at::TensorOptions().dtype(at::kLong).device(device));
  return torch::from_blob(const_cast<int64_t*>(v.data()), {static_cast<int64_t>(v.size())}, at::kLong)
      .clone()
      .to(device);
}

MatchIndex match_index(const std::vector<Match>& matches, int64_t q_count, const std::vector<int64_t>& targets,
                       at::Device device, const char* what) {
  std::vector<int64_t> s, t;
  int64_t offset = 0;
  for (size_t p = 0; p < matches.size(); ++p) {
    for (const auto& [q, k] : matches[p]) {
      INSTINCT_CHECK(q >= 0 && q < q_count && k >= 0 && k < targets[p], what, ": match (", q, ", ", k,
                     ") of pair ", p, " out of range (Q = ", q_count, ", T = ", targets[p], ")");
      s.push_back(static_cast<int64_t>(p) * q_count + q);
      t.push_back(offset + k);
    }
    offset += targets[p];
  }
  MatchIndex r;
  r.count = static_cast<int64_t>(s.size());
  r.student = long_tensor(s, device);
  r.teacher = long_tensor(t, device);
  return r;
}

// Concatenation of the non-empty per-pair teacher tensors, detached, on `device` in `dtype`.
at::Tensor cat_targets(const std::vector<at::Tensor>& xs, at::Device device, at::ScalarType dtype) {
  std::vector<at::Tensor> v;
  for (const auto& x : xs)
    if (x.numel() > 0) v.push_back(x.detach().to(device, dtype));
  return v.empty() ? at::Tensor() : at::cat(v);
}

double softplus(double x) { return x > 0 ? x + std::log1p(std::exp(-x)) : std::log1p(std::exp(x)); }

// GIoU of two cxcywh boxes in double, same rules as generalized_box_iou.
double giou_cxcywh(const double* a, const double* b) {
  double ax1 = a[0] - 0.5 * a[2], ay1 = a[1] - 0.5 * a[3], ax2 = a[0] + 0.5 * a[2], ay2 = a[1] + 0.5 * a[3];
  double bx1 = b[0] - 0.5 * b[2], by1 = b[1] - 0.5 * b[3], bx2 = b[0] + 0.5 * b[2], by2 = b[1] + 0.5 * b[3];
  ax2 = std::max(ax2, ax1 + kMinBoxSide), ay2 = std::max(ay2, ay1 + kMinBoxSide);
  bx2 = std::max(bx2, bx1 + kMinBoxSide), by2 = std::max(by2, by1 + kMinBoxSide);
  double area_a = (ax2 - ax1) * (ay2 - ay1), area_b = (bx2 - bx1) * (by2 - by1);
  double iw = std::max(0.0, std::min(ax2, bx2) - std::max(ax1, bx1));
  double ih = std::max(0.0, std::min(ay2, by2) - std::max(ay1, by1));
  double inter = iw * ih, uni = std::max(area_a + area_b - inter, 1e-12);
  double enc = std::max((std::max(ax2, bx2) - std::min(ax1, bx1)) * (std::max(ay2, by2) - std::min(ay1, by1)), 1e-12);
  return inter / uni - (enc - uni) / enc;
}

// Cost matrix (Q,T) row-major from CPU double data.
std::vector<double> cost_matrix(const double* logit, const double* box, int64_t q_count, const double* tbox,
                                int64_t t_count, const MatchCost& cfg) {
  std::vector<double> c(static_cast<size_t>(q_count * t_count));
  for (int64_t q = 0; q < q_count; ++q) {
    double x = logit[q], p = 1 / (1 + std::exp(-x)), np = 1 / (1 + std::exp(x));
    double cls = cfg.focal_alpha * std::pow(np, cfg.focal_gamma) * softplus(-x) -
                 (1 - cfg.focal_alpha) * std::pow(p, cfg.focal_gamma) * softplus(x);
    const double* bq = box + 4 * q;
    for (int64_t t = 0; t < t_count; ++t) {
      const double* bt = tbox + 4 * t;
      double l1 = std::abs(bq[0] - bt[0]) + std::abs(bq[1] - bt[1]) + std::abs(bq[2] - bt[2]) + std::abs(bq[3] - bt[3]);
      double v = cfg.w_class * cls + cfg.w_l1 * l1 - cfg.w_giou * giou_cxcywh(bq, bt);
      c[q * t_count + t] = std::isfinite(v) ? v : cfg.invalid_cost;
    }
  }
  return c;
}

at::Tensor cpu_f64(const at::Tensor& x) { return x.detach().to(at::kCPU, at::kDouble).contiguous(); }

Match solve(const double* logit, const double* box, int64_t q_count, const double* tbox, int64_t t_count,
            const MatchCost& cfg) {
  if (q_count == 0 || t_count == 0) return {};
  auto c = cost_matrix(logit, box, q_count, tbox, t_count, cfg);
  auto a = linear_sum_assignment(c, static_cast<int>(q_count), static_cast<int>(t_count));
  Match m(a.rows.size());
  for (size_t k = 0; k < m.size(); ++k) m[k] = {a.rows[k], a.cols[k]};
  return m;
}

// Logits shaped lead (e.g. {Q} or {P,Q}), optionally with a trailing 1.
at::Tensor logits_arg(const at::Tensor& l, std::vector<int64_t> lead, const char* what) {
  INSTINCT_CHECK(l.defined(), what, ": undefined tensor");
  bool ok = l.sizes() == at::IntArrayRef(lead);
  lead.push_back(1);
  ok = ok || l.sizes() == at::IntArrayRef(lead);
  lead.pop_back();
  INSTINCT_CHECK(ok, what, ": expected logits ", at::IntArrayRef(lead), " (optionally with a trailing 1), got ",
                 l.sizes());
  return l;
}

at::Tensor giou_broadcast(const at::Tensor& a_in, const at::Tensor& b_in) {
  auto dt = (a_in.scalar_type() == at::kDouble || b_in.scalar_type() == at::kDouble) ? at::kDouble : at::kFloat;
  auto a = a_in.to(dt), b = b_in.to(dt);
  auto ax1 = a.select(-1, 0), ay1 = a.select(-1, 1);
  auto ax2 = at::max(a.select(-1, 2), ax1 + kMinBoxSide), ay2 = at::max(a.select(-1, 3), ay1 + kMinBoxSide);
  auto bx1 = b.select(-1, 0), by1 = b.select(-1, 1);
  auto bx2 = at::max(b.select(-1, 2), bx1 + kMinBoxSide), by2 = at::max(b.select(-1, 3), by1 + kMinBoxSide);
  auto area_a = (ax2 - ax1) * (ay2 - ay1), area_b = (bx2 - bx1) * (by2 - by1);
  auto iw = (at::min(ax2, bx2) - at::max(ax1, bx1)).clamp_min(0);
  auto ih = (at::min(ay2, by2) - at::max(ay1, by1)).clamp_min(0);
  auto inter = iw * ih;
  auto uni = (area_a + area_b - inter).clamp_min(1e-12);
  auto enc = ((at::max(ax2, bx2) - at::min(ax1, bx1)) * (at::max(ay2, by2) - at::min(ay1, by1))).clamp_min(1e-12);
  return inter / uni - (enc - uni) / enc;
}

}  // namespace

at::Tensor box_cxcywh_to_xyxy(const at::Tensor& boxes) {
  INSTINCT_CHECK(boxes.dim() >= 1 && boxes.size(-1) == 4, "box_cxcywh_to_xyxy: expected (...,4), got ", boxes.sizes());
  auto c = boxes.narrow(-1, 0, 2), half = 0.5 * boxes.narrow(-1, 2, 2);
  return at::cat({c - half, c + half}, -1);
}

at::Tensor generalized_box_iou(const at::Tensor& a, const at::Tensor& b) {
  auto aa = boxes_arg(a, "generalized_box_iou: a"), bb = boxes_arg(b, "generalized_box_iou: b");
  return giou_broadcast(aa.unsqueeze(1), bb.unsqueeze(0));
}

at::Tensor generalized_box_iou_paired(const at::Tensor& a, const at::Tensor& b) {
  auto aa = boxes_arg(a, "generalized_box_iou_paired: a"), bb = boxes_arg(b, "generalized_box_iou_paired: b");
  INSTINCT_CHECK(aa.size(0) == bb.size(0), "generalized_box_iou_paired: ", aa.sizes(), " vs ", bb.sizes());
  return giou_broadcast(aa, bb);
}

at::Tensor match_cost_matrix(const at::Tensor& student_logits, const at::Tensor& student_boxes,
                             const at::Tensor& teacher_boxes, const MatchCost& cfg) {
  auto sb = boxes_arg(student_boxes, "match_cost_matrix: student_boxes");
  int64_t q = sb.size(0);
  auto l = cpu_f64(logits_arg(student_logits, {q}, "match_cost_matrix: student_logits").reshape({q}));
  auto b = cpu_f64(sb), t = cpu_f64(boxes_arg(teacher_boxes, "match_cost_matrix: teacher_boxes"));
  auto c = cost_matrix(l.data_ptr<double>(), b.data_ptr<double>(), q, t.data_ptr<double>(), t.size(0), cfg);
  auto opts = at::TensorOptions().dtype(at::kDouble);
  return c.empty() ? at::zeros({q, t.size(0)}, opts) : torch::from_blob(c.data(), {q, t.size(0)}, opts).clone();
}

Match hungarian_match(const at::Tensor& student_logits, const at::Tensor& student_boxes,
                      const at::Tensor& teacher_boxes, const MatchCost& cfg) {
  auto sb = boxes_arg(student_boxes, "hungarian_match: student_boxes");
  int64_t q = sb.size(0);
  auto l = cpu_f64(logits_arg(student_logits, {q}, "hungarian_match: student_logits").reshape({q}));
  auto b = cpu_f64(sb), t = cpu_f64(boxes_arg(teacher_boxes, "hungarian_match: teacher_boxes"));
  return solve(l.data_ptr<double>(), b.data_ptr<double>(), q, t.data_ptr<double>(), t.size(0), cfg);
}

std::vector<Match> hungarian_match_batch(const at::Tensor& student_logits, const at::Tensor& student_boxes,
                                         const std::vector<at::Tensor>& teacher_boxes, const MatchCost& cfg) {
  INSTINCT_CHECK(student_boxes.dim() == 3 && student_boxes.size(2) == 4,
                 "hungarian_match_batch: student_boxes: expected (P,Q,4), got ", student_boxes.sizes());
  int64_t p_count = student_boxes.size(0), q = student_boxes.size(1);
  INSTINCT_CHECK(static_cast<int64_t>(teacher_boxes.size()) == p_count, "hungarian_match_batch: ",
                 teacher_boxes.size(), " teacher box tensors for ", p_count, " pairs");
  logits_arg(student_logits, {p_count, q}, "hungarian_match_batch: student_logits");
  auto l = cpu_f64(student_logits.reshape({p_count, q})), b = cpu_f64(student_boxes);
  std::vector<at::Tensor> nonempty;
  std::vector<int64_t> offset(p_count + 1, 0);
  for (int64_t p = 0; p < p_count; ++p) {
    auto t = boxes_arg(teacher_boxes[p], "hungarian_match_batch: teacher_boxes");
    offset[p + 1] = offset[p] + t.size(0);
    if (t.size(0) > 0) nonempty.push_back(t.detach().to(at::kDouble));
  }
  // One concatenation on the teacher's device, then one copy to the CPU.
  auto t = nonempty.empty() ? at::zeros({0, 4}, at::kDouble) : cpu_f64(at::cat(nonempty));
  std::vector<Match> out(p_count);
  for (int64_t p = 0; p < p_count; ++p)
    out[p] = solve(l.data_ptr<double>() + p * q, b.data_ptr<double>() + p * q * 4, q,
                   t.data_ptr<double>() + 4 * offset[p], offset[p + 1] - offset[p], cfg);
  return out;
}

int64_t num_matches(const std::vector<Match>& matches) {
  int64_t n = 0;
  for (const auto& m : matches) n += static_cast<int64_t>(m.size());
  return n;
}

at::Tensor gather_matched(const at::Tensor& x, const std::vector<Match>& matches) {
  INSTINCT_CHECK(x.dim() >= 2, "gather_matched: expected (P,Q,...), got ", x.sizes());
  check_batch(matches, x.size(0), "gather_matched");
  std::vector<int64_t> sizes;  // targets are not indexed here: accept any target index
  for (const auto& m : matches) {
    int64_t top = 0;
    for (const auto& pr : m) top = std::max(top, pr.second + 1);
    sizes.push_back(top);
  }
  auto idx = match_index(matches, x.size(1), sizes, x.device(), "gather_matched");
  return x.flatten(0, 1).index_select(0, idx.student);
}

BoxLoss box_loss(const at::Tensor& student_boxes, const std::vector<at::Tensor>& teacher_boxes,
                 const std::vector<Match>& matches, double num_boxes) {
  INSTINCT_CHECK(student_boxes.dim() == 3 && student_boxes.size(2) == 4,
                 "box_loss: student_boxes: expected (P,Q,4), got ", student_boxes.sizes());
  int64_t p_count = student_boxes.size(0);
  check_batch(matches, p_count, "box_loss");
  INSTINCT_CHECK(static_cast<int64_t>(teacher_boxes.size()) == p_count, "box_loss: ", teacher_boxes.size(),
                 " teacher box tensors for ", p_count, " pairs");
  std::vector<int64_t> sizes;
  for (const auto& t : teacher_boxes) sizes.push_back(boxes_arg(t, "box_loss: teacher_boxes").size(0));
  auto idx = match_index(matches, student_boxes.size(1), sizes, student_boxes.device(), "box_loss");
  if (idx.count == 0) return {connected_zero(student_boxes), connected_zero(student_boxes)};
  auto s = upcast(student_boxes).reshape({-1, 4}).index_select(0, idx.student);
  auto t = cat_targets(teacher_boxes, s.device(), s.scalar_type()).index_select(0, idx.teacher);
  double n = num_boxes > 0 ? num_boxes : static_cast<double>(idx.count);
  auto l1 = (s - t).abs().sum() / n;
  auto giou = (1 - generalized_box_iou_paired(box_cxcywh_to_xyxy(s), box_cxcywh_to_xyxy(t))).sum() / n;
  return {l1, giou};
}

at::Tensor point_sample(const at::Tensor& maps, const at::Tensor& points) {
  INSTINCT_CHECK(maps.dim() == 3, "point_sample: maps: expected (K,H,W), got ", maps.sizes());
  INSTINCT_CHECK(points.dim() == 3 && points.size(0) == maps.size(0) && points.size(2) == 2,
                 "point_sample: points: expected (", maps.size(0), ",S,2), got ", points.sizes());
  auto grid = (points.to(maps.device(), maps.scalar_type()) * 2 - 1).unsqueeze(1);  // (K,1,S,2)
  // interpolation 0 = bilinear, padding 1 = border.
  return at::grid_sampler(maps.unsqueeze(1), grid, 0, 1, false).flatten(1);  // (K,1,1,S) -> (K,S)
}

at::Tensor dice_loss(const at::Tensor& logits, const at::Tensor& targets) {
  INSTINCT_CHECK(logits.dim() == 2 && logits.sizes() == targets.sizes(), "dice_loss: logits ", logits.sizes(),
                 " and targets ", targets.sizes(), ": expected equal (K,N)");
  auto p = upcast(logits).sigmoid();
  auto g = targets.to(p.scalar_type());
  return 1 - (2 * (p * g).sum(1) + 1) / (p.sum(1) + g.sum(1) + 1);
}

MaskLoss mask_loss(const at::Tensor& student_masks, const std::vector<at::Tensor>& teacher_masks,
                   const std::vector<Match>& matches, const MaskLossConfig& cfg, at::Generator generator,
                   const at::Tensor& points, double num_boxes) {
  INSTINCT_CHECK(student_masks.dim() == 4, "mask_loss: student_masks: expected (P,Q,H,W), got ", student_masks.sizes());
  int64_t p_count = student_masks.size(0);
  check_batch(matches, p_count, "mask_loss");
  INSTINCT_CHECK(static_cast<int64_t>(teacher_masks.size()) == p_count, "mask_loss: ", teacher_masks.size(),
                 " teacher mask tensors for ", p_count, " pairs");
  std::vector<int64_t> sizes;
  for (const auto& t : teacher_masks) {
    INSTINCT_CHECK(t.dim() == 3 || t.numel() == 0, "mask_loss: teacher_masks: expected (T,H,W), got ", t.sizes());
    sizes.push_back(t.numel() == 0 ? 0 : t.size(0));
  }
  auto idx = match_index(matches, student_masks.size(1), sizes, student_masks.device(), "mask_loss");
  if (idx.count == 0) return {connected_zero(student_masks), connected_zero(student_masks)};
  auto s = upcast(student_masks).flatten(0, 1).index_select(0, idx.student);
  auto t = cat_targets(teacher_masks, s.device(), s.scalar_type()).index_select(0, idx.teacher);
  if (points.defined() || cfg.num_points > 0) {
    at::Tensor pts = points;
    if (!pts.defined()) {
      auto opts = at::TensorOptions().dtype(at::kFloat).device(generator.defined() ? generator.device() : s.device());
      pts = at::rand({idx.count, cfg.num_points, 2}, generator.defined() ? c10::optional<at::Generator>(generator)
                                                                          : c10::nullopt, opts);
    }
    s = point_sample(s, pts);
    t = point_sample(t, pts);
  } else {
    INSTINCT_CHECK(s.sizes().slice(1) == t.sizes().slice(1), "mask_loss: student masks ", student_masks.sizes(),
                   " and teacher masks ", t.sizes(), " differ in size: use point sampling (num_points > 0)");
    s = s.flatten(1);
    t = t.flatten(1);
  }
  auto g = t.sigmoid();
  auto ce = at::binary_cross_entropy_with_logits(s, g, {}, {}, at::Reduction::None);
  if (cfg.kind == MaskLossKind::focal) {
    auto p = s.sigmoid();
    auto p_t = p * g + (1 - p) * (1 - g);
    ce = ce * (1 - p_t).pow(cfg.focal_gamma);
    if (cfg.focal_alpha >= 0) ce = ce * (cfg.focal_alpha * g + (1 - cfg.focal_alpha) * (1 - g));
  }
  double n = num_boxes > 0 ? num_boxes : static_cast<double>(idx.count);
  return {ce.mean(1).sum() / n, dice_loss(s, g).sum() / n};
}

at::Tensor class_kd_loss(const at::Tensor& student_logits, const std::vector<at::Tensor>& teacher_logits,
                         const at::Tensor& teacher_presence, const std::vector<Match>& matches,
                         const ClassKdConfig& cfg) {
  INSTINCT_CHECK(student_logits.dim() == 2 || (student_logits.dim() == 3 && student_logits.size(2) == 1),
                 "class_kd_loss: student_logits: expected (P,Q) or (P,Q,1), got ", student_logits.sizes());
  INSTINCT_CHECK(cfg.temperature > 0, "class_kd_loss: temperature must be > 0, got ", cfg.temperature);
  int64_t p_count = student_logits.size(0), q = student_logits.size(1);
  check_batch(matches, p_count, "class_kd_loss");
  INSTINCT_CHECK(static_cast<int64_t>(teacher_logits.size()) == p_count, "class_kd_loss: ", teacher_logits.size(),
                 " teacher logit tensors for ", p_count, " pairs");
  std::vector<int64_t> sizes;
  for (const auto& t : teacher_logits) {
    INSTINCT_CHECK(t.dim() <= 1 || (t.dim() == 2 && t.size(1) == 1),
                   "class_kd_loss: teacher_logits: expected (T) or (T,1), got ", t.sizes());
    sizes.push_back(t.numel());
  }
  if (p_count * q == 0) return connected_zero(student_logits);
  const double temp = cfg.temperature;
  auto s = upcast(student_logits).reshape({p_count * q});
  auto opts = s.options().requires_grad(false);
  auto idx = match_index(matches, q, sizes, s.device(), "class_kd_loss");
  auto target = at::zeros({p_count * q}, opts);
  auto weight = at::full({p_count * q}, cfg.w_unmatched, opts);
  if (idx.count > 0) {
    std::vector<at::Tensor> flat;
    for (const auto& t : teacher_logits) flat.push_back(t.reshape({-1}));
    auto t = cat_targets(flat, s.device(), s.scalar_type()).index_select(0, idx.teacher);
    target = target.index_copy(0, idx.student, (t / temp).sigmoid());
    weight = weight.index_copy(0, idx.student, cfg.confidence_weight ? t.sigmoid() : at::ones_like(t));
  }
  if (cfg.presence_gate) {
    INSTINCT_CHECK(teacher_presence.defined() && teacher_presence.numel() == p_count,
                   "class_kd_loss: teacher_presence: expected (P) or (P,1) with P = ", p_count, ", got ",
                   teacher_presence.defined() ? teacher_presence.sizes() : at::IntArrayRef{});
    auto gate = teacher_presence.detach().to(s.device(), s.scalar_type()).reshape({p_count, 1}).sigmoid();
    weight = (weight.reshape({p_count, q}) * gate).reshape({-1});
  }
  auto bce = at::binary_cross_entropy_with_logits(s / temp, target, {}, {}, at::Reduction::None);
  return (bce * weight).sum() * (temp * temp / static_cast<double>(p_count * q));
}

at::Tensor presence_kd_loss(const at::Tensor& student_presence, const at::Tensor& teacher_presence,
                            double temperature) {
  INSTINCT_CHECK(temperature > 0, "presence_kd_loss: temperature must be > 0, got ", temperature);
  INSTINCT_CHECK(student_presence.numel() == teacher_presence.numel() && student_presence.dim() <= 2 &&
                     (student_presence.dim() < 2 || student_presence.size(1) == 1),
                 "presence_kd_loss: expected student and teacher presence (P) or (P,1), got ",
                 student_presence.sizes(), " and ", teacher_presence.sizes());
  if (student_presence.numel() == 0) return connected_zero(student_presence);
  auto s = upcast(student_presence).reshape({-1});
  auto t = teacher_presence.detach().to(s.device(), s.scalar_type()).reshape({-1});
  return at::binary_cross_entropy_with_logits(s / temperature, (t / temperature).sigmoid()) *
         (temperature * temperature);
}

at::Tensor clock_weights(int64_t num_tokens, const std::vector<at::Tensor>& teacher_boxes, const ClockConfig& cfg,
                         at::Device device) {
  int64_t h = cfg.grid_h, w = cfg.grid_w;
  if (h == 0 && w == 0) {
    h = w = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(num_tokens))));
    INSTINCT_CHECK(h * w == num_tokens, "clock_weights: ", num_tokens,
                   " memory tokens are not a square grid: set grid_h and grid_w");
  }
  INSTINCT_CHECK(h > 0 && w > 0 && h * w == num_tokens, "clock_weights: grid ", h, "x", w, " does not hold ",
                 num_tokens, " memory tokens");
  auto opts = at::TensorOptions().dtype(at::kFloat).device(device);
  auto ys = (at::arange(h, opts) + 0.5) / static_cast<double>(h);
  auto xs = (at::arange(w, opts) + 0.5) / static_cast<double>(w);
  auto cy = ys.unsqueeze(1).expand({h, w}).reshape({1, -1}), cx = xs.unsqueeze(0).expand({h, w}).reshape({1, -1});
  std::vector<at::Tensor> cols;
  for (const auto& tb : teacher_boxes) {
    auto b = boxes_arg(tb, "clock_weights: teacher_boxes").detach().to(device, at::kFloat);
    auto xy = box_cxcywh_to_xyxy(b);
    auto inside = (cx >= xy.select(1, 0).unsqueeze(1)) & (cx <= xy.select(1, 2).unsqueeze(1)) &
                  (cy >= xy.select(1, 1).unsqueeze(1)) & (cy <= xy.select(1, 3).unsqueeze(1));  // (T,N)
    auto area = (b.select(1, 2) * static_cast<double>(w) * b.select(1, 3) * static_cast<double>(h)).clamp_min(1);
    auto inf = at::full({}, INFINITY, opts);
    auto smallest = b.size(0) == 0 ? at::full({num_tokens}, INFINITY, opts)
                                   : at::where(inside, area.unsqueeze(1), inf).amin(0);  // (N)
    auto fg = smallest.isfinite();
    auto n_bg = (~fg).sum().to(at::kFloat).clamp_min(1);
    cols.push_back(at::where(fg, cfg.alpha / smallest, cfg.beta / n_bg));
  }
  if (cols.empty()) return at::zeros({num_tokens, 0}, opts);
  return at::stack(cols, 1);
}

at::Tensor clock_memory_loss(const at::Tensor& student_memory, const at::Tensor& teacher_memory,
                             const std::vector<at::Tensor>& teacher_boxes, const ClockConfig& cfg) {
  INSTINCT_CHECK(student_memory.dim() == 3 && student_memory.sizes() == teacher_memory.sizes(),
                 "clock_memory_loss: expected student and teacher memory of equal shape (N,B,D), got ",
                 student_memory.sizes(), " and ", teacher_memory.sizes());
  int64_t b = student_memory.size(1);
  INSTINCT_CHECK(static_cast<int64_t>(teacher_boxes.size()) == b, "clock_memory_loss: ", teacher_boxes.size(),
                 " teacher box tensors for batch ", b);
  if (student_memory.numel() == 0) return connected_zero(student_memory);
  auto s = upcast(student_memory);
  auto d = (s - teacher_memory.detach().to(s.scalar_type())).pow(2).sum(-1);  // (N,B)
  auto wts = clock_weights(student_memory.size(0), teacher_boxes, cfg, s.device()).to(s.scalar_type());
  return (d * wts).sum() / static_cast<double>(b);
}

at::Tensor pool_text_embeddings(const at::Tensor& text, const at::Tensor& pad) {
  INSTINCT_CHECK(text.dim() == 3 && pad.dim() == 2 && pad.size(0) == text.size(0) && pad.size(1) == text.size(1),
                 "pool_text_embeddings: expected text (C,L,D) and pad (C,L), got ", text.sizes(), " and ", pad.sizes());
  auto x = upcast(text);
  auto keep = pad.to(x.device()).logical_not().to(x.scalar_type()).unsqueeze(-1);
  return (x * keep).sum(1) / keep.sum(1).clamp_min(1);
}

at::Tensor info_nce_loss(const at::Tensor& h, const at::Tensor& concepts, const at::Tensor& concept_ids, double tau) {
  INSTINCT_CHECK(h.dim() == 2 && concepts.dim() == 2 && h.size(1) == concepts.size(1),
                 "info_nce_loss: expected h (K,D) and concepts (C,D), got ", h.sizes(), " and ", concepts.sizes());
  INSTINCT_CHECK(concept_ids.dim() == 1 && concept_ids.size(0) == h.size(0), "info_nce_loss: concept_ids: expected (",
                 h.size(0), "), got ", concept_ids.sizes());
  INSTINCT_CHECK(tau > 0, "info_nce_loss: tau must be > 0, got ", tau);
  if (h.size(0) == 0) return connected_zero(h);
  auto ids = concept_ids.to(h.device(), at::kLong);
  int64_t c = concepts.size(0);
  auto bad = ((ids < 0) | (ids >= c)).any();
  INSTINCT_CHECK(!bad.item<bool>(), "info_nce_loss: concept_ids out of range [0, ", c, ")");
  auto x = upcast(h);
  auto p = concepts.detach().to(x.scalar_type());
  x = x / x.norm(2, {1}, true).clamp_min(1e-12);
  p = p / p.norm(2, {1}, true).clamp_min(1e-12);
  auto logits = x.mm(p.t()) / tau;
  return -logits.log_softmax(1).gather(1, ids.unsqueeze(1)).mean();
}

at::Tensor region_text_loss(const at::Tensor& query_emb, const std::vector<Match>& matches,
                            const at::Tensor& pair_concept, const at::Tensor& concepts, double tau) {
  INSTINCT_CHECK(query_emb.dim() == 3, "region_text_loss: query_emb: expected (P,Q,D), got ", query_emb.sizes());
  INSTINCT_CHECK(pair_concept.dim() == 1 && pair_concept.size(0) == query_emb.size(0),
                 "region_text_loss: pair_concept: expected (", query_emb.size(0), "), got ", pair_concept.sizes());
  auto h = gather_matched(query_emb, matches);
  std::vector<int64_t> pair_of;
  for (size_t p = 0; p < matches.size(); ++p) pair_of.insert(pair_of.end(), matches[p].size(), static_cast<int64_t>(p));
  auto ids = pair_concept.to(at::kLong).index_select(0, long_tensor(pair_of, pair_concept.device()));
  return info_nce_loss(h, concepts, ids, tau);
}

}  // namespace instinct::distill
