#include "instinct/eval/evaluate.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <ctime>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>

#include "instinct/common/error.h"
#include "instinct/common/device.h"
#include "common/progress.h"
#include "instinct/data/loader.h"
#include "common/signals.h"
#include "eval/overlay.h"
#include "eval/postprocess.h"
#include "eval/predictions.h"
#include "eval/prompt_model.h"
#include "instinct/teacher/phrases.h"
#include "eval/report.h"
#include "eval/report_html.h"
#include "instinct/io/atomic_file.h"

namespace instinct::eval {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// The selected COCO images as a loader dataset.
class SelectedImages : public data::Dataset {
 public:
  SelectedImages(const CocoDataset& ds, std::vector<size_t> sel, std::string root)
      : ds_(ds), sel_(std::move(sel)), root_(std::move(root)) {}
  size_t size() const override { return sel_.size(); }
  std::string path(size_t i) const override { return root_ + "/" + ds_.images()[sel_[i]].file_name; }
  int64_t image_id(size_t i) const override { return ds_.images()[sel_[i]].id; }
  const CocoImageRecord& record(size_t i) const { return ds_.images()[sel_[i]]; }

 private:
  const CocoDataset& ds_;
  std::vector<size_t> sel_;
  std::string root_;
};

// How an original image maps onto the network input (postprocess.h).
using Geometry = InputGeometry;

Geometry geometry_of(const CocoImageRecord& r, const data::PreprocessConfig& pre) {
  auto [ch, cw] = data::resized_size(r.height, r.width, pre);
  return {r.height, r.width, ch, cw, pre.image_size, pre.resize == "longest_pad"};
}

// Mask logits over the network input -> RLE at the original size: concept masks with SAM3's rule
// (sigmoid > 0.5), box / point masks with SAM's (logit > 0).
Rle to_rle(const at::Tensor& logits, const Geometry& g, const std::string& kind) {
  return mask_logits_to_rle(logits, g, kind == "concept" ? MaskRule::sigmoid_half : MaskRule::logit_positive);
}

// Overlay panels of the first K images, written once an image's panels are complete.
class Overlays {
 public:
  Overlays(const EvalConfig& cfg, const CocoDataset& ds, size_t n_models)
      : cfg_(cfg), ds_(ds), n_models_(n_models) {
    if (cfg.overlays <= 0) return;
    INSTINCT_CHECK(overlays_supported(), "overlays=", cfg.overlays, " needs OpenCV imgcodecs (built with INSTINCT_WITH_IMGCODECS=OFF)");
    INSTINCT_CHECK(!cfg.images.empty(), "overlays=", cfg.overlays, " needs images= (the folder of the original images)");
    dir_ = cfg.output + "/overlays";
    std::error_code ec;
    fs::create_directories(dir_, ec);
    INSTINCT_CHECK(!ec, "overlay directory '", dir_, "' cannot be created: ", ec.message());
  }
  bool wanted(size_t selection_index) const { return int64_t(selection_index) < cfg_.overlays; }
  void add(size_t selection_index, const std::string& model, const CocoImageRecord& img, const Target& t,
           const std::string& prompt, const Rle& pred, double score, double iou) {
    if (!wanted(selection_index)) return;
    auto& v = panels_[selection_index];
    if (v.img == nullptr) { v.img = &img; v.target = t.annotation; }
    if (t.annotation != v.target) return;  // targets: all -> the image's first target only
    OverlayPanel p;
    char buf[160];
    if (prompt == "concept")
      std::snprintf(buf, sizeof buf, "%s | '%s' %.2f | IoU %.2f", model.c_str(),
                    ds_.category_name(ds_.annotations()[t.annotation].category_id).c_str(), score, iou);
    else
      std::snprintf(buf, sizeof buf, "%s | %s | IoU %.2f", model.c_str(), prompt.c_str(), iou);
    p.caption = buf;
    p.pred = pred;
    p.gt = ds_.annotations()[t.annotation].rle;
    p.has_box = prompt == "box";
    p.box = t.box_xyxy;
    p.has_point = prompt == "point";
    p.point = t.point;
    v.panels.push_back(std::move(p));
  }
  // Writes the pending images (call after every model has added its panels for them).
  void flush() {
    for (auto& [i, v] : panels_) {
      if (v.panels.empty()) continue;
      const auto name = dir_ + "/" + std::to_string(v.img->id) + ".png";
      write_overlay(name, cfg_.images + "/" + v.img->file_name, v.img->height, v.img->width, v.panels,
                    int(v.panels.size() / n_models_));
      written_.push_back(name);
      const auto& ann = ds_.annotations()[v.target];
      listing_.push_back({{"image_id", v.img->id}, {"file_name", v.img->file_name}, {"annotation_id", ann.id},
                          {"category", ds_.category_name(ann.category_id)},
                          {"png", "overlays/" + std::to_string(v.img->id) + ".png"}});
    }
    panels_.clear();
  }
  int written() const { return int(written_.size()); }
  // The overlays written, for report.json / report.html (paths relative to the output directory).
  const json& listing() const { return listing_; }
  // Removes the overlays this run wrote (an interrupted evaluation leaves no partial output).
  void discard() {
    std::error_code ec;
    for (const auto& f : written_) fs::remove(f, ec);
    written_.clear();
    listing_ = json::array();
    if (!dir_.empty() && fs::is_empty(dir_, ec)) fs::remove(dir_, ec);
  }

 private:
  struct Pending {
    const CocoImageRecord* img = nullptr;
    size_t target = 0;
    std::vector<OverlayPanel> panels;
  };
  const EvalConfig& cfg_;
  const CocoDataset& ds_;
  size_t n_models_;
  std::string dir_;
  std::map<size_t, Pending> panels_;
  std::vector<std::string> written_;
  json listing_ = json::array();
};

// SIGINT/SIGTERM during an evaluation: no report, the run's overlays removed, exit 128 + signal.
int interrupted(int sig, int64_t done, size_t total, Overlays& overlays, const EvalConfig& cfg) {
  overlays.discard();
  spdlog::warn("signal {} received after {}/{} images: stopping without a report (nothing written to {})", sig, done,
               total, cfg.output);
  return 128 + sig;
}

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tm);
  return buf;
}

// report.json and report.html, both or neither: everything is rendered before the first write, a
// signal received meanwhile still means no report, and report.json is removed if report.html fails.
int write_report(const EvalConfig& cfg, const ReportBuilder& rb, size_t n_images, json extra,
                 const std::vector<std::string>& model_names, Overlays& overlays) {
  rb.print_table(stdout, n_images);
  std::fflush(stdout);
  extra["models"] = model_names;
  extra["overlays"] = overlays.listing();
  const json report = rb.to_json(n_images, extra);
  const std::string html = render_report_html(report, cfg.output, utc_now());
  if (const int sig = stop_signal()) return interrupted(sig, int64_t(n_images), n_images, overlays, cfg);
  std::error_code ec;
  fs::create_directories(cfg.output, ec);
  INSTINCT_CHECK(!ec, "output directory '", cfg.output, "' cannot be created: ", ec.message());
  const std::string json_path = cfg.output + "/report.json";
  io::write_file_atomic(json_path, report.dump(1) + "\n");
  try {
    io::write_file_atomic(cfg.output + "/report.html", html);
  } catch (...) {
    fs::remove(json_path, ec);
    throw;
  }
  spdlog::info("report written to {}/report.json and report.html", cfg.output);
  return 0;
}

// The prompt modes in table order.
std::vector<std::string> prompt_modes(const EvalConfig& cfg) {
  std::vector<std::string> out;
  for (const char* p : {"concept", "box", "point"})
    if (std::find(cfg.prompts.begin(), cfg.prompts.end(), p) != cfg.prompts.end()) out.push_back(p);
  return out;
}

int eval_models(const EvalConfig& cfg, const CocoDataset& ds, const std::vector<size_t>& selected) {
  INSTINCT_CHECK(!cfg.teacher.empty(), "teacher must name a teacher bundle directory (or give predictions=...)");
  set_cpu_threads(cfg.threads);
  const at::Device device = resolve_device(cfg.device);
  const auto modes = prompt_modes(cfg);
  auto has = [&](const char* p) { return std::find(modes.begin(), modes.end(), p) != modes.end(); };

  teacher::BundleLoadOptions bo;
  bo.modules = {"trunk", "detector_neck", "interactive_neck", "grounding", "sam_head"};
  const bool need_phrases = has("concept") || cfg.protocol.cgf1;
  if (need_phrases) {
    auto pm = teacher::phrase_modules(teacher::read_bundle_info(cfg.teacher));
    if (pm.empty()) pm = {"concept_bank"};  // load() then names what is missing
    bo.modules.insert(bo.modules.end(), pm.begin(), pm.end());
  }
  bo.device = device;
  auto bundle = std::make_shared<teacher::TeacherBundle>(teacher::TeacherBundle::load(cfg.teacher, bo));
  const auto& info = bundle->info();
  std::vector<PromptModel> models;
  models.emplace_back("teacher", bundle);
  for (const auto& s : cfg.students) {
    auto [name, path] = split_named_path(s);
    models.emplace_back(name, bundle, path, device);
  }
  ReportBuilder rb(ds, cfg.protocol, modes);
  for (const auto& m : models) rb.add_model(m.name(), m.trunk_parameters());
  // Category -> row of the phrase table: the concept bank's tokens, or the text encoder's for names
  // outside the bank (categories neither can encode get no prediction).
  std::map<int, int64_t> concept_of;
  std::vector<int> bank_categories;
  std::vector<std::string> names;
  if (need_phrases)
    for (int cid : ds.category_ids())
      if (teacher::can_encode(*bundle, ds.category_name(cid))) {
        concept_of[cid] = int64_t(names.size());
        names.push_back(ds.category_name(cid));
        bank_categories.push_back(cid);
      }
  teacher::PhraseTable phrases;
  if (!names.empty()) {
    phrases = teacher::encode_phrases(*bundle, names, device, "category");
    if (phrases.from_encoder > 0)
      spdlog::info("concept prompts: {} categories from the concept bank, {} encoded by the text encoder", phrases.from_bank,
                   phrases.from_encoder);
  }
  auto text_of = [&](const at::Tensor& rows) {
    return std::make_pair(phrases.text.index_select(0, rows), phrases.pad.index_select(0, rows));
  };

  const data::PreprocessConfig pre = teacher::preprocess_config(info);
  data::LoaderConfig lc;
  lc.batch_size = cfg.batch_size;
  lc.num_workers = cfg.workers;
  lc.shuffle = false;
  lc.drop_last = false;
  lc.max_bad_fraction = 1.0;  // missing images are skipped and counted, never fatal
  auto images = std::make_shared<SelectedImages>(ds, selected, cfg.images);
  data::Loader loader(images, pre, lc);
  loader.start_epoch(0);
  Overlays overlays(cfg, ds, models.size());

  struct Prompt { size_t row; size_t sel; const CocoImageRecord* img; Target target; int64_t concept; Geometry g; };
  struct Pair { size_t row; const CocoImageRecord* img; int category; int64_t concept; Geometry g; };
  int64_t n_no_concept = 0;
  double t_trunk = 0, t_prompts = 0, t_post = 0;  // trunk+necks, heads+post-processing, post-processing
  Progress progress("eval", int64_t(selected.size()), cfg.progress);
  int64_t done = 0;
  torch::NoGradGuard ng;
  const auto t_start = std::chrono::steady_clock::now();
  auto now = [&] {
    if (device.is_cuda()) torch::cuda::synchronize();
    return std::chrono::steady_clock::now();
  };
  auto secs = [](auto a, auto b) { return std::chrono::duration<double>(b - a).count(); };
  install_stop_handlers();
  while (auto batch = loader.next()) {
    if (const int sig = stop_signal()) return interrupted(sig, done, selected.size(), overlays, cfg);
    auto pixels = batch->images.to(device);
    std::vector<Prompt> prompts;
    std::vector<Pair> pairs;
    for (size_t r = 0; r < batch->indices.size(); ++r) {
      const size_t sel = size_t(batch->indices[r]);
      const auto& rec = images->record(sel);
      const auto g = geometry_of(rec, pre);
      for (const auto& t : select_targets(ds, rec, cfg.protocol)) {
        const int cat = ds.annotations()[t.annotation].category_id;
        prompts.push_back({r, sel, &rec, t, concept_of.count(cat) ? concept_of[cat] : -1, g});
        n_no_concept += !concept_of.count(cat);
      }
      if (cfg.protocol.cgf1)
        for (int c : cgf1_categories(ds, rec, bank_categories, cfg.protocol.cgf1_absent, uint64_t(cfg.protocol.cgf1_seed)))
          pairs.push_back({r, &rec, c, concept_of.count(c) ? concept_of[c] : -1, g});
    }
    done += int64_t(batch->indices.size());
    const int64_t P = int64_t(prompts.size());
    if (P == 0 && pairs.empty()) { progress.update(done, "no targets"); continue; }
    auto idx = torch::empty({P}, torch::kLong), ids = torch::empty({P}, torch::kLong);
    auto box_pts = torch::empty({P, 2, 2}), pt_pts = torch::empty({P, 1, 2});
    for (int64_t p = 0; p < P; ++p) {
      const auto& pr = prompts[size_t(p)];
      const double sx = pr.g.sx(), sy = pr.g.sy();
      idx[p] = int64_t(pr.row);
      ids[p] = std::max<int64_t>(pr.concept, 0);
      box_pts[p][0][0] = pr.target.box_xyxy[0] * sx; box_pts[p][0][1] = pr.target.box_xyxy[1] * sy;
      box_pts[p][1][0] = pr.target.box_xyxy[2] * sx; box_pts[p][1][1] = pr.target.box_xyxy[3] * sy;
      pt_pts[p][0][0] = pr.target.point[0] * sx; pt_pts[p][0][1] = pr.target.point[1] * sy;
    }
    auto box_lbl = torch::tensor({2, 3}, torch::kLong).repeat({P, 1}).to(device);
    auto pt_lbl = torch::ones({P, 1}, torch::kLong).to(device);
    auto dev_idx = idx.to(device);
    for (const auto& m : models) {
      auto t0 = now();
      auto f = m.encode(pixels);
      auto t1 = now();
      t_trunk += secs(t0, t1);
      auto record = [&](const std::string& kind, const PromptMasks& pm) {
        const auto tp = now();
        auto logits = pm.logits.to(torch::kFloat).cpu();
        auto score = pm.score.to(torch::kFloat).cpu();
        auto kept = pm.kept.defined() ? pm.kept.cpu() : at::Tensor();
        auto boxes = pm.boxes.defined() ? pm.boxes.to(torch::kFloat).cpu() : at::Tensor();
        for (int64_t p = 0; p < P; ++p) {
          const auto& pr = prompts[size_t(p)];
          ScoredPrediction sp;
          sp.score = score[p].item<double>();
          sp.kept = kind != "concept" || (pr.concept >= 0 && kept[p].item<bool>());
          sp.mask = sp.kept ? to_rle(logits[p], pr.g, kind) : rle_empty(pr.img->height, pr.img->width);
          if (sp.kept && boxes.defined()) {  // cxcywh over the network input -> xyxy original pixels
            const auto b = boxes.accessor<float, 2>()[p];
            sp.has_box = true;
            sp.box = box_to_original_xyxy({b[0], b[1], b[2], b[3]}, pr.g);
          }
          const double iou = rb.add(m.name(), *pr.img, pr.target, kind, sp);
          overlays.add(pr.sel, m.name(), *pr.img, pr.target, kind, sp.mask, sp.score, iou);
        }
        t_post += secs(tp, now());
      };
      if (P > 0) {
        if (has("concept")) {
          if (phrases.text.defined()) {
            auto [text, pad] = text_of(ids.to(device));
            record("concept", m.concept(f, dev_idx, text, pad, cfg.protocol.concept_threshold));
          } else {  // no category can be encoded: every concept prompt is an empty prediction
            PromptMasks none;
            none.logits = torch::zeros({P, info.mask_size, info.mask_size});
            none.score = torch::zeros({P});
            none.kept = torch::zeros({P}, torch::kBool);
            record("concept", none);
          }
        }
        if (has("box")) record("box", m.prompt(f, dev_idx, box_pts.to(device), box_lbl, cfg.protocol.mask_choice));
        if (has("point")) record("point", m.prompt(f, dev_idx, pt_pts.to(device), pt_lbl, cfg.protocol.mask_choice));
      }
      if (!pairs.empty()) {
        const int64_t n = int64_t(pairs.size());
        auto pidx = torch::empty({n}, torch::kLong), pids = torch::empty({n}, torch::kLong);
        for (int64_t k = 0; k < n; ++k) {
          pidx[k] = int64_t(pairs[size_t(k)].row);
          pids[k] = std::max<int64_t>(pairs[size_t(k)].concept, 0);
        }
        ConceptInstances ci;
        if (phrases.text.defined()) {
          auto [ptext, ppad] = text_of(pids.to(device));
          ci = m.concept_instances(f, pidx.to(device), ptext, ppad);
        }
        const auto tp = now();
        auto score = ci.score.defined() ? ci.score.to(torch::kFloat).cpu() : at::Tensor();
        auto logits = ci.logits.defined() ? ci.logits.to(torch::kFloat).cpu() : at::Tensor();
        for (int64_t k = 0; k < n; ++k) {
          const auto& pa = pairs[size_t(k)];
          std::vector<Rle> dt;
          if (pa.concept >= 0 && score.defined())
            for (int64_t q = 0; q < score.size(1); ++q)
              if (score[k][q].item<double>() >= cfg.protocol.concept_threshold) dt.push_back(to_rle(logits[k][q], pa.g, "concept"));
          rb.add_cgf1(m.name(), *pa.img, pa.category, dt);
        }
        t_post += secs(tp, now());
      }
      t_prompts += secs(t1, now());
    }
    overlays.flush();
    progress.update(done, std::to_string(rb.targets()) + " targets", double(done), "img");
  }
  progress.finish();
  if (const int sig = stop_signal()) return interrupted(sig, done, selected.size(), overlays, cfg);
  for (int64_t k = 0; k < loader.num_skipped(); ++k) rb.count_skipped_image();
  if (n_no_concept > 0) spdlog::warn("{} targets have a category missing from the concept bank (scored as empty)", n_no_concept);
  const double wall = secs(t_start, std::chrono::steady_clock::now());
  const double n_eval = double(int64_t(selected.size()) - loader.num_skipped());
  const double t_heads = t_prompts - t_post, t_other = std::max(0.0, wall - t_trunk - t_prompts);
  auto pct = [&](double t) { return wall > 0 ? 100 * t / wall : 0.0; };
  json timing = {{"wall_s", wall}, {"images_per_s", wall > 0 ? n_eval / wall : 0.0}, {"models", models.size()},
                 {"trunk_and_necks_s", t_trunk}, {"prompt_heads_s", t_heads}, {"postprocess_s", t_post},
                 {"other_s", t_other}};
  spdlog::info("{:.1f} images/s ({} models): trunk+necks {:.0f}%, prompt heads {:.0f}%, mask upsampling+RLE+IoU {:.0f}%, "
               "loading/waiting {:.0f}%; {} overlays", wall > 0 ? n_eval / wall : 0.0, models.size(), pct(t_trunk),
               pct(t_heads), pct(t_post), pct(t_other), overlays.written());
  std::vector<std::string> model_names;
  for (const auto& m : models) model_names.push_back(m.name());
  return write_report(cfg, rb, selected.size(), {{"teacher", cfg.teacher}, {"timing", timing}}, model_names, overlays);
}

int eval_predictions(const EvalConfig& cfg, const CocoDataset& ds, const std::vector<size_t>& selected) {
  INSTINCT_CHECK(cfg.teacher.empty() && cfg.students.empty(), "give either predictions=... or teacher/students, not both");
  const auto modes = prompt_modes(cfg);
  std::vector<PredictionSet> sets;
  for (const auto& spec : cfg.predictions) sets.push_back(PredictionSet::load(spec, ds));
  ReportBuilder rb(ds, cfg.protocol, modes);
  for (const auto& s : sets) rb.add_model(s.name(), -1);
  Overlays overlays(cfg, ds, sets.size());
  const auto cats = ds.category_ids();
  Progress progress("eval", int64_t(selected.size()), cfg.progress);
  int64_t done = 0;
  install_stop_handlers();
  for (size_t sel = 0; sel < selected.size(); ++sel) {
    if (const int sig = stop_signal()) return interrupted(sig, done, selected.size(), overlays, cfg);
    const auto& img = ds.images()[selected[sel]];
    const auto targets = select_targets(ds, img, cfg.protocol);
    for (const auto& s : sets) {
      for (const auto& t : targets) {
        const auto& ann = ds.annotations()[t.annotation];
        for (const auto& kind : modes) {
          const auto sp = kind == "concept" ? s.find_concept(img, ann.category_id, cfg.protocol.concept_threshold)
                                            : s.find_prompt(img, ann.id, kind, targets.size());
          const double iou = rb.add(s.name(), img, t, kind, sp);
          overlays.add(sel, s.name(), img, t, kind, sp.mask, sp.score, iou);
        }
      }
      if (cfg.protocol.cgf1)
        for (int c : cgf1_categories(ds, img, cats, cfg.protocol.cgf1_absent, uint64_t(cfg.protocol.cgf1_seed)))
          rb.add_cgf1(s.name(), img, c, s.concept_instances(img.id, c, cfg.protocol.concept_threshold));
    }
    overlays.flush();
    ++done;
    progress.update(done, std::to_string(rb.targets()) + " targets", double(done), "img");
  }
  progress.finish();
  if (const int sig = stop_signal()) return interrupted(sig, done, selected.size(), overlays, cfg);
  json files = json::array();
  for (const auto& s : sets) files.push_back({{"name", s.name()}, {"path", s.path()}, {"rows", s.size()}});
  std::vector<std::string> names;
  for (const auto& s : sets) names.push_back(s.name());
  return write_report(cfg, rb, selected.size(), {{"predictions", files}}, names, overlays);
}

}  // namespace

int run_eval(const EvalConfig& cfg) {
  validate(cfg.protocol);
  INSTINCT_CHECK(!cfg.annotations.empty(), "annotations must name a COCO instances json");
  for (const auto& p : cfg.prompts)
    INSTINCT_CHECK(p == "concept" || p == "box" || p == "point", "prompts: '", p, "' is unknown; valid: concept, box, point");
  INSTINCT_CHECK(!prompt_modes(cfg).empty() || cfg.protocol.cgf1, "prompts is empty and protocol.cgf1 is off: nothing to evaluate");
  INSTINCT_CHECK(cfg.overlays >= 0, "overlays = ", cfg.overlays, ": expected >= 0");
  std::vector<int64_t> subset;
  if (!cfg.protocol.subset.empty()) subset = read_subset_ids(cfg.protocol.subset);
  const CocoDataset ds = CocoDataset::load(cfg.annotations, subset);
  const auto selected = select_images(ds, cfg.protocol);
  return cfg.predictions.empty() ? eval_models(cfg, ds, selected) : eval_predictions(cfg, ds, selected);
}

}  // namespace instinct::eval
