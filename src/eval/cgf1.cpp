#include "instinct/eval/cgf1.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "common/assignment.h"
#include "instinct/common/error.h"
#include "common/random.h"

namespace instinct::eval {

CgF1Pair match_pair(const std::vector<Rle>& gt, const std::vector<Rle>& dt) {
  CgF1Pair p;
  p.gt = int(gt.size());
  p.dt = int(dt.size());
  if (gt.empty() || dt.empty()) return p;
  std::vector<double> iou(gt.size() * dt.size());
  for (size_t i = 0; i < gt.size(); ++i)
    for (size_t j = 0; j < dt.size(); ++j) iou[i * dt.size() + j] = rle_iou(dt[j], gt[i], false);
  const auto a = linear_sum_assignment(iou, int(gt.size()), int(dt.size()), /*maximize=*/true);
  for (size_t k = 0; k < a.rows.size(); ++k) p.ious.push_back(iou[size_t(a.rows[k]) * dt.size() + size_t(a.cols[k])]);
  std::sort(p.ious.begin(), p.ious.end(), std::greater<>());
  return p;
}

std::array<double, 10> cgf1_thresholds() {
  std::array<double, 10> t{};
  for (int k = 0; k < 10; ++k) t[size_t(k)] = 0.5 + 0.05 * k;
  return t;
}

CgF1Result cgf1(const std::vector<CgF1Pair>& pairs) {
  CgF1Result r;
  r.pairs = int64_t(pairs.size());
  const auto th = cgf1_thresholds();
  std::array<double, 10> tp{}, fp{}, fn{};
  for (const auto& p : pairs) {
    const bool g = p.gt > 0, d = p.dt > 0;
    r.il_tp += g && d;
    r.il_fn += g && !d;
    r.il_fp += !g && d;
    r.il_tn += !g && !d;
    if (!g) continue;
    ++r.positive_pairs;
    for (size_t k = 0; k < th.size(); ++k) {
      // 1e-12: thresholds like 0.7 = 0.5 + 4 * 0.05 carry rounding error; an IoU of exactly 7/10 passes.
      const auto n = std::count_if(p.ious.begin(), p.ious.end(), [&](double v) { return v >= th[k] - 1e-12; });
      tp[k] += double(n);
      fp[k] += double(p.dt - n);
      fn[k] += double(p.gt - n);
    }
  }
  // As SAM3's CGF1Eval.accumulate computes them, its division guards included (they move the values
  // by ~1e-4 relative, so they are kept for parity): P = TP/(TP+FP+1e-4), R = TP/(TP+FN+1e-4),
  // pmF1 = 2PR/(P+R+1e-4), IL_MCC = (TP TN - FP FN)/(sqrt(product of the marginals) + 1e-6).
  const double den = double(r.il_tp + r.il_fp) * double(r.il_tp + r.il_fn) * double(r.il_tn + r.il_fp) *
                     double(r.il_tn + r.il_fn);
  r.il_mcc = (double(r.il_tp) * double(r.il_tn) - double(r.il_fp) * double(r.il_fn)) / (std::sqrt(den) + 1e-6);
  for (size_t k = 0; k < th.size(); ++k) {
    const double prec = tp[k] / (tp[k] + fp[k] + 1e-4), rec = tp[k] / (tp[k] + fn[k] + 1e-4);
    r.pmf1_t[k] = 2 * prec * rec / (prec + rec + 1e-4);
    r.pmf1 += r.pmf1_t[k] / double(th.size());
    r.cgf1 += r.pmf1_t[k] * r.il_mcc / double(th.size());
  }
  return r;
}

std::vector<int> cgf1_categories(const CocoDataset& ds, const CocoImageRecord& img, const std::vector<int>& candidates,
                                 int n_absent, uint64_t seed) {
  INSTINCT_CHECK(n_absent >= 0, "protocol.cgf1_absent = ", n_absent, ": expected >= 0");
  std::set<int> present, annotated;
  for (size_t k : img.annotations) {
    const auto& a = ds.annotations()[k];
    annotated.insert(a.category_id);
    if (!a.iscrowd) present.insert(a.category_id);
  }
  std::vector<int> absent;
  for (int c : candidates)
    if (!annotated.count(c)) absent.push_back(c);
  // Partial Fisher-Yates with a portable generator (std distributions differ between libraries).
  uint64_t s = seed * 0x100000001b3ULL ^ uint64_t(img.id);
  const size_t n = std::min(absent.size(), size_t(n_absent));
  for (size_t i = 0; i < n; ++i) std::swap(absent[i], absent[i + splitmix64(s) % (absent.size() - i)]);
  std::vector<int> out(present.begin(), present.end());
  out.insert(out.end(), absent.begin(), absent.begin() + std::ptrdiff_t(n));
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<Rle> cgf1_ground_truth(const CocoDataset& ds, const CocoImageRecord& img, int category_id) {
  std::vector<Rle> gt;
  for (size_t k : img.annotations) {
    const auto& a = ds.annotations()[k];
    if (!a.iscrowd && a.category_id == category_id) gt.push_back(a.rle);
  }
  return gt;
}

}  // namespace instinct::eval
