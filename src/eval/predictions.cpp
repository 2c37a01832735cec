#include "eval/predictions.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <unordered_map>

#include "instinct/common/error.h"

namespace instinct::eval {
using json = nlohmann::json;

std::pair<std::string, std::string> split_named_path(const std::string& spec) {
  const auto eq = spec.find('=');
  if (eq != std::string::npos) return {spec.substr(0, eq), spec.substr(eq + 1)};
  return {std::filesystem::path(spec).stem().string(), spec};
}

PredictionSet PredictionSet::load(const std::string& spec, const CocoDataset& ds) {
  PredictionSet ps;
  const bool named = spec.find('=') != std::string::npos;
  std::tie(ps.name_, ps.path_) = split_named_path(spec);
  std::ifstream f(ps.path_);
  INSTINCT_CHECK(f.good(), "predictions file '", ps.path_, "' cannot be opened");
  json root;
  try {
    root = json::parse(f);
  } catch (const json::exception& e) {
    fail(ps.path_, ": not valid JSON (", e.what(), ")");
  }
  const json* rows = &root;
  if (root.is_object()) {
    INSTINCT_CHECK(root.contains("rows") && root["rows"].is_array(), ps.path_,
                   ": expected a JSON array of prediction rows or an object with a \"rows\" array");
    rows = &root["rows"];
  }
  INSTINCT_CHECK(rows->is_array(), ps.path_, ": expected a JSON array of prediction rows");
  // Several models in one file (an instinct-eval report): keep NAME's rows.
  std::set<std::string> models;
  for (const auto& r : *rows)
    if (r.is_object() && r.contains("model") && r["model"].is_string()) models.insert(r["model"].get<std::string>());
  std::string only;
  if (models.size() > 1 || (models.size() == 1 && named)) {
    std::string list;
    for (const auto& m : models) list += (list.empty() ? "" : ", ") + m;
    INSTINCT_CHECK(named && models.count(ps.name_), ps.path_, ": rows hold models [", list, "]; name one as ",
                   "NAME=", ps.path_, named ? " ('" + ps.name_ + "' is not among them)" : "");
    only = ps.name_;
  }
  std::unordered_map<int64_t, const CocoImageRecord*> images;
  for (const auto& im : ds.images()) images[im.id] = &im;
  const auto cats = ds.category_ids();
  const std::set<int> cat_set(cats.begin(), cats.end());
  for (size_t i = 0; i < rows->size(); ++i) {
    const json& r = (*rows)[i];
    const std::string where = ps.path_ + " row " + std::to_string(i);
    INSTINCT_CHECK(r.is_object(), where, ": expected an object, got ", r.type_name());
    if (!only.empty() && !(r.contains("model") && r["model"].is_string() && r["model"].get<std::string>() == only)) continue;
    auto need = [&](const char* k) -> const json& {
      INSTINCT_CHECK(r.contains(k), where, ": missing key \"", k, "\"");
      return r[k];
    };
    PredictionRow p;
    const json& id = need("image_id");
    INSTINCT_CHECK(id.is_number_integer(), where, ": image_id ", id.dump(), " is not an integer");
    p.image_id = id.get<int64_t>();
    const json& prompt = need("prompt");
    INSTINCT_CHECK(prompt.is_string(), where, ": prompt ", prompt.dump(), " is not a string");
    p.prompt = prompt.get<std::string>();
    INSTINCT_CHECK(p.prompt == "box" || p.prompt == "point" || p.prompt == "concept", where, ": prompt '", p.prompt,
                   "' is unknown; valid: box, point, concept");
    if (r.contains("category_id") && !r["category_id"].is_null()) {
      const json& c = r["category_id"];
      INSTINCT_CHECK(c.is_number_integer(), where, ": category_id ", c.dump(), " is not an integer");
      const int64_t id = c.get<int64_t>();  // (wraps above 2^63: then negative, and rejected)
      INSTINCT_CHECK(id >= 0 && id <= INT32_MAX && cat_set.count(int(id)), where, ": category_id ", c.dump(),
                     " is not a category of ", ds.path());
      p.category_id = int(id);
    }
    INSTINCT_CHECK(p.prompt != "concept" || p.category_id >= 0, where, ": concept rows need a category_id");
    if (r.contains("annotation_id") && !r["annotation_id"].is_null()) {
      INSTINCT_CHECK(r["annotation_id"].is_number_integer(), where, ": annotation_id ", r["annotation_id"].dump(),
                     " is not an integer");
      p.annotation_id = r["annotation_id"].get<int64_t>();
    }
    if (r.contains("score") && !r["score"].is_null()) {
      INSTINCT_CHECK(r["score"].is_number(), where, ": score ", r["score"].dump(), " is not a number");
      p.score = r["score"].get<double>();
    } else {
      INSTINCT_CHECK(p.prompt != "concept", where, ": concept rows need a score");
    }
    auto img = images.find(p.image_id);
    INSTINCT_CHECK(img != images.end(), where, ": image_id ", p.image_id, " is not an image of ", ds.path());
    const char* key = r.contains("segmentation") ? "segmentation" : "mask";
    const json& seg = need(key);
    try {
      p.mask = segmentation_to_rle(seg, img->second->height, img->second->width);
    } catch (const Error& e) {
      fail(where, " (image_id ", p.image_id, "): ", e.what());
    }
    ps.by_image_prompt_[{p.image_id, p.prompt}].push_back(ps.rows_.size());
    ps.rows_.push_back(std::move(p));
  }
  return ps;
}

ScoredPrediction PredictionSet::find_prompt(const CocoImageRecord& img, int64_t annotation_id, const std::string& prompt,
                                            size_t image_targets) const {
  ScoredPrediction out;
  out.mask = rle_empty(img.height, img.width);
  auto it = by_image_prompt_.find({img.id, prompt});
  const PredictionRow* best = nullptr;
  if (it != by_image_prompt_.end()) {
    for (size_t k : it->second) {
      const auto& r = rows_[k];
      INSTINCT_CHECK(r.annotation_id >= 0 || image_targets <= 1, path_, ": ", prompt, " rows of image ", img.id,
                     " carry no annotation_id, but the protocol gives that image ", image_targets, " targets");
      if (r.annotation_id >= 0 && r.annotation_id != annotation_id) continue;
      if (!best || r.score > best->score) best = &r;
    }
  }
  if (!best) {
    out.missing = true;
    out.kept = false;
    return out;
  }
  out.mask = best->mask;
  out.score = best->score;
  return out;
}

ScoredPrediction PredictionSet::find_concept(const CocoImageRecord& img, int category_id, double threshold) const {
  ScoredPrediction out;
  out.mask = rle_empty(img.height, img.width);
  out.kept = false;
  auto it = by_image_prompt_.find({img.id, "concept"});
  const PredictionRow* best = nullptr;
  if (it != by_image_prompt_.end())
    for (size_t k : it->second)
      if (rows_[k].category_id == category_id && (!best || rows_[k].score > best->score)) best = &rows_[k];
  if (!best) {
    out.missing = true;
    return out;
  }
  out.score = best->score;
  out.kept = best->score >= threshold;
  if (out.kept) out.mask = best->mask;
  return out;
}

std::vector<Rle> PredictionSet::concept_instances(int64_t image_id, int category_id, double threshold) const {
  std::vector<Rle> out;
  auto it = by_image_prompt_.find({image_id, "concept"});
  if (it == by_image_prompt_.end()) return out;
  for (size_t k : it->second)
    if (rows_[k].category_id == category_id && rows_[k].score >= threshold) out.push_back(rows_[k].mask);
  return out;
}

}  // namespace instinct::eval
