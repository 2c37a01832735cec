#include "eval/report.h"

#include <nlohmann/json.hpp>

#include "instinct/common/error.h"

namespace instinct::eval {
using json = nlohmann::json;

namespace {
struct JsonFields {
  json& j;
  template <class T>
  void operator()(const char* k, const T& v, const char*) { j[k] = v; }
};

double iou_or_zero(const Rle& pred, const Rle& gt) {
  if (rle_area(pred) == 0 && rle_area(gt) == 0) return 0.0;  // empty union -> 0 by protocol
  return rle_iou(pred, gt, false);
}
}  // namespace

json protocol_to_json(const ProtocolConfig& p) {
  json j = json::object();
  JsonFields o{j};
  const_cast<ProtocolConfig&>(p).visit(o);
  return j;
}

ReportBuilder::ReportBuilder(const CocoDataset& ds, ProtocolConfig protocol, std::vector<std::string> prompts)
    : ds_(ds), protocol_(std::move(protocol)), prompts_(std::move(prompts)) {}

void ReportBuilder::add_model(const std::string& name, int64_t trunk_params) {
  INSTINCT_CHECK(!models_.count(name), "model name '", name, "' is used twice; give each model a distinct NAME=");
  order_.push_back(name);
  models_[name].trunk_params = trunk_params;
}

double ReportBuilder::add(const std::string& model, const CocoImageRecord& img, const Target& target,
                          const std::string& prompt, const ScoredPrediction& pred) {
  auto it = models_.find(model);
  INSTINCT_ASSERT(it != models_.end());
  const auto& ann = ds_.annotations()[target.annotation];
  INSTINCT_ASSERT(pred.mask.h == img.height && pred.mask.w == img.width);
  const double iou = iou_or_zero(pred.mask, ann.rle);
  it->second.ious[prompt].push_back(iou);
  if (pred.missing) ++it->second.missing[prompt];
  if (model == order_.front() && prompt == prompts_.front()) ++targets_;
  json row = {{"model", model}, {"image_id", img.id}, {"annotation_id", ann.id}, {"category_id", ann.category_id},
              {"prompt", prompt}, {"iou", iou}, {"score", pred.score}, {"kept", pred.kept}};
  if (pred.missing) row["missing"] = true;
  if (pred.has_box) row["box"] = pred.box;
  if (prompt == "box") row["prompt_box"] = target.box_xyxy;
  if (prompt == "point") row["prompt_point"] = target.point;
  row["segmentation"] = {{"size", {pred.mask.h, pred.mask.w}}, {"counts", rle_to_string(pred.mask)}};
  rows_.push_back(std::move(row));
  return iou;
}

void ReportBuilder::add_cgf1(const std::string& model, const CocoImageRecord& img, int category_id,
                             const std::vector<Rle>& dt) {
  auto it = models_.find(model);
  INSTINCT_ASSERT(it != models_.end());
  auto p = match_pair(cgf1_ground_truth(ds_, img, category_id), dt);
  p.image_id = img.id;
  p.category_id = category_id;
  cgf1_rows_.push_back({{"model", model}, {"image_id", img.id}, {"category_id", category_id}, {"gt", p.gt},
                        {"dt", p.dt}, {"ious", p.ious}});
  it->second.cgf1.push_back(std::move(p));
}

void ReportBuilder::print_table(std::FILE* out, size_t n_images) const {
  std::vector<std::string> cols;
  for (const auto& p : prompts_) cols.push_back(p == "concept" ? "concept IoU" : p + " mIoU");
  if (protocol_.cgf1) cols.push_back("concept cgF1");
  std::fprintf(out, "\n%-14s %12s", "model", "trunk params");
  for (const auto& c : cols) std::fprintf(out, "  %-18s", c.c_str());
  std::fprintf(out, "\n");
  const ModelStats& ref = models_.at(order_.front());
  for (const auto& name : order_) {
    const ModelStats& m = models_.at(name);
    char params[32] = "-";
    if (m.trunk_params >= 0) std::snprintf(params, sizeof params, "%.2fM", double(m.trunk_params) / 1e6);
    std::fprintf(out, "%-14s %12s", name.c_str(), params);
    auto cell = [&](double v, double base) {
      char buf[64];
      std::snprintf(buf, sizeof buf, "%.3f (%.0f%%)", v, base > 0 ? 100.0 * v / base : 0.0);
      std::fprintf(out, "  %-18s", buf);
    };
    for (const auto& p : prompts_) {
      auto v = m.ious.count(p) ? m.ious.at(p) : std::vector<double>{};
      auto b = ref.ious.count(p) ? ref.ious.at(p) : std::vector<double>{};
      cell(summarize(v).mean, summarize(b).mean);
    }
    if (protocol_.cgf1) cell(cgf1(m.cgf1).cgf1, cgf1(ref.cgf1).cgf1);
    std::fprintf(out, "\n");
  }
  std::fprintf(out, "(%zu images, %lld targets, %lld images skipped as unreadable)\n", n_images, (long long)targets_,
               (long long)images_skipped_);
}

json ReportBuilder::to_json(size_t n_images, const json& extra) const {
  json summary = json::object();
  const ModelStats& ref = models_.at(order_.front());
  for (const auto& name : order_) {
    const ModelStats& m = models_.at(name);
    json ms = json::object();
    if (m.trunk_params >= 0) ms["trunk_params"] = m.trunk_params;
    for (const auto& p : prompts_) {
      const auto s = summarize(m.ious.count(p) ? m.ious.at(p) : std::vector<double>{});
      const auto b = summarize(ref.ious.count(p) ? ref.ious.at(p) : std::vector<double>{});
      ms[p] = {{"mean", s.mean}, {"median", s.median}, {"count", s.count},
               {"pct_of_reference", b.mean > 0 ? 100.0 * s.mean / b.mean : 0.0},
               {"missing", m.missing.count(p) ? m.missing.at(p) : 0}};
    }
    if (protocol_.cgf1) {
      const auto c = cgf1(m.cgf1);
      const auto b = cgf1(ref.cgf1);
      ms["cgf1"] = {{"cgf1", c.cgf1}, {"pmf1", c.pmf1}, {"il_mcc", c.il_mcc}, {"pmf1_per_threshold", c.pmf1_t},
                    {"pairs", c.pairs}, {"positive_pairs", c.positive_pairs},
                    {"il_counts", {{"tp", c.il_tp}, {"fp", c.il_fp}, {"fn", c.il_fn}, {"tn", c.il_tn}}},
                    {"pct_of_reference", b.cgf1 > 0 ? 100.0 * c.cgf1 / b.cgf1 : 0.0}};
    }
    summary[name] = ms;
  }
  json j = {{"format", "instinct-eval-report"}, {"version", 1}, {"annotations", ds_.path()},
            {"protocol", protocol_to_json(protocol_)}, {"reference_model", order_.front()},
            {"images", n_images}, {"targets", targets_}, {"images_skipped", images_skipped_},
            {"summary", summary}, {"rows", rows_}};
  if (protocol_.cgf1) j["cgf1_pairs"] = cgf1_rows_;
  for (auto it = extra.begin(); it != extra.end(); ++it) j[it.key()] = it.value();
  return j;
}

}  // namespace instinct::eval
