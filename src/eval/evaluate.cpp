#include "instinct/eval/evaluate.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "instinct/common/error.h"
#include "instinct/common/progress.h"
#include "instinct/data/loader.h"
#include "instinct/eval/prompt_model.h"
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

struct Prompt {
  size_t batch_row;  // image row in the batch
  const CocoImageRecord* img;
  Target target;
  int64_t concept_id;
};

// Upsamples (M,M) logits to the original image size (squash preprocessing), thresholds at 0.
Rle to_rle(const at::Tensor& logits, int h, int w) {
  auto up = torch::nn::functional::interpolate(
      logits.to(torch::kFloat).unsqueeze(0).unsqueeze(0),
      torch::nn::functional::InterpolateFuncOptions().size(std::vector<int64_t>{h, w}).mode(torch::kBilinear).align_corners(false));
  auto m = (up.squeeze(0).squeeze(0) > 0).to(torch::kUInt8).contiguous().cpu();
  return rle_encode(m.data_ptr<uint8_t>(), h, w);
}

double iou_or_zero(const Rle& pred, const Rle& gt) {
  if (rle_area(pred) == 0 && rle_area(gt) == 0) return 0.0;  // empty union -> 0 by protocol
  return rle_iou(pred, gt, false);
}

struct JsonFields {
  json& j;
  template <class T>
  void operator()(const char* k, const T& v, const char*) { j[k] = v; }
};

json protocol_json(const ProtocolConfig& p) {
  json j = json::object();
  JsonFields o{j};
  const_cast<ProtocolConfig&>(p).visit(o);
  return j;
}

std::pair<std::string, std::string> parse_student(const std::string& spec) {
  const auto eq = spec.find('=');
  if (eq != std::string::npos) return {spec.substr(0, eq), spec.substr(eq + 1)};
  return {fs::path(spec).stem().string(), spec};
}

}  // namespace

int run_eval(const EvalConfig& cfg) {
  validate(cfg.protocol);
  INSTINCT_CHECK(!cfg.annotations.empty(), "annotations must name a COCO instances json");
  INSTINCT_CHECK(!cfg.teacher.empty(), "teacher must name a teacher bundle directory");
  for (const auto& p : cfg.prompts)
    INSTINCT_CHECK(p == "concept" || p == "box" || p == "point", "prompts: '", p, "' is unknown; valid: concept, box, point");
  at::set_num_threads(cfg.threads > 0 ? cfg.threads : int(std::max(1u, std::thread::hardware_concurrency())));
  at::Device device = cfg.device == "auto" ? (torch::cuda::is_available() ? at::Device(at::kCUDA) : at::Device(at::kCPU))
                                           : at::Device(cfg.device);
  auto has_prompt = [&](const char* p) { return std::find(cfg.prompts.begin(), cfg.prompts.end(), p) != cfg.prompts.end(); };

  // Data and protocol.
  std::vector<int64_t> subset;
  if (!cfg.protocol.subset.empty()) subset = read_subset_ids(cfg.protocol.subset);
  const CocoDataset ds = CocoDataset::load(cfg.annotations, subset);
  const auto selected = select_images(ds, cfg.protocol);

  // Models: the teacher and the students on the teacher's heads.
  teacher::BundleLoadOptions bo;
  bo.modules = {"trunk", "detector_neck", "interactive_neck", "grounding", "sam_head", "concept_bank"};
  bo.device = device;
  auto bundle = std::make_shared<teacher::TeacherBundle>(teacher::TeacherBundle::load(cfg.teacher, bo));
  const auto& info = bundle->info();
  INSTINCT_CHECK(info.resize == "squash", "instinct-eval supports squash preprocessing only; bundle ", info.dir,
                 " uses '", info.resize, "'");
  std::vector<PromptModel> models;
  models.emplace_back("teacher", bundle);
  for (const auto& s : cfg.students) {
    auto [name, path] = parse_student(s);
    models.emplace_back(name, bundle, path, device);
  }
  // Every target category must be in the concept bank.
  std::map<int, int64_t> concept_of;
  for (int cid : ds.category_ids()) {
    const int k = info.concept_id(ds.category_name(cid));
    if (k >= 0) concept_of[cid] = k;
  }

  data::PreprocessConfig pre;
  pre.image_size = info.image_size;
  pre.resize = info.resize;
  pre.mean = info.pixel_mean;
  pre.std = info.pixel_std;
  data::LoaderConfig lc;
  lc.batch_size = cfg.batch_size;
  lc.num_workers = cfg.workers;
  lc.shuffle = false;
  lc.drop_last = false;
  lc.max_bad_fraction = 1.0;  // missing images are skipped and counted, never fatal
  auto images = std::make_shared<SelectedImages>(ds, selected, cfg.images);
  data::Loader loader(images, pre, lc);
  loader.start_epoch(0);

  std::map<std::string, std::map<std::string, std::vector<double>>> ious;  // model -> prompt -> values
  json rows = json::array();
  int64_t n_targets = 0, n_no_concept = 0;
  const double S = info.image_size;
  Progress progress("eval", int64_t(selected.size()), cfg.progress);
  int64_t done = 0;
  torch::NoGradGuard ng;
  while (auto batch = loader.next()) {
    auto pixels = batch->images.to(device);
    std::vector<Prompt> prompts;
    for (size_t r = 0; r < batch->indices.size(); ++r) {
      const auto& rec = images->record(size_t(batch->indices[r]));
      for (const auto& t : select_targets(ds, rec, cfg.protocol)) {
        const int cat = ds.annotations()[t.annotation].category_id;
        prompts.push_back({r, &rec, t, concept_of.count(cat) ? concept_of[cat] : -1});
      }
    }
    done += int64_t(batch->indices.size());
    n_targets += int64_t(prompts.size());
    if (prompts.empty()) { progress.update(done, "no targets"); continue; }
    const int64_t P = int64_t(prompts.size());
    auto idx = torch::empty({P}, torch::kLong);
    auto box_pts = torch::empty({P, 2, 2}), pt_pts = torch::empty({P, 1, 2});
    for (int64_t p = 0; p < P; ++p) {
      const auto& pr = prompts[size_t(p)];
      const double sx = S / pr.img->width, sy = S / pr.img->height;
      idx[p] = int64_t(pr.batch_row);
      box_pts[p][0][0] = pr.target.box_xyxy[0] * sx; box_pts[p][0][1] = pr.target.box_xyxy[1] * sy;
      box_pts[p][1][0] = pr.target.box_xyxy[2] * sx; box_pts[p][1][1] = pr.target.box_xyxy[3] * sy;
      pt_pts[p][0][0] = pr.target.point[0] * sx; pt_pts[p][0][1] = pr.target.point[1] * sy;
    }
    auto box_lbl = torch::tensor({2, 3}, torch::kLong).repeat({P, 1});
    auto pt_lbl = torch::ones({P, 1}, torch::kLong);
    for (const auto& m : models) {
      auto f = m.encode(pixels);
      auto record = [&](const char* kind, const PromptMasks& pm) {
        auto logits = pm.logits.cpu();
        auto score = pm.score.to(torch::kFloat).cpu();
        for (int64_t p = 0; p < P; ++p) {
          const auto& pr = prompts[size_t(p)];
          const auto& ann = ds.annotations()[pr.target.annotation];
          const bool kept = !pm.kept.defined() || pm.kept[p].item<bool>();
          Rle pred = kept ? to_rle(logits[p], pr.img->height, pr.img->width) : Rle{pr.img->height, pr.img->width, {uint32_t(pr.img->height) * uint32_t(pr.img->width)}};
          const double iou = iou_or_zero(pred, ann.rle);
          ious[m.name()][kind].push_back(iou);
          rows.push_back({{"model", m.name()}, {"image_id", pr.img->id}, {"annotation_id", ann.id},
                          {"category_id", ann.category_id}, {"prompt", kind}, {"iou", iou},
                          {"score", score[p].item<double>()}, {"kept", kept},
                          {"mask", {{"size", {pred.h, pred.w}}, {"counts", rle_to_string(pred)}}}});
        }
      };
      auto dev_idx = idx.to(device);
      if (has_prompt("box")) record("box", m.prompt(f, dev_idx, box_pts.to(device), box_lbl.to(device)));
      if (has_prompt("point")) record("point", m.prompt(f, dev_idx, pt_pts.to(device), pt_lbl.to(device)));
      if (has_prompt("concept")) {
        auto ids = torch::empty({P}, torch::kLong);
        for (int64_t p = 0; p < P; ++p) ids[p] = std::max<int64_t>(prompts[size_t(p)].concept_id, 0);
        auto pm = m.concept(f, dev_idx, ids.to(device), cfg.protocol.concept_threshold);
        for (int64_t p = 0; p < P; ++p)
          if (prompts[size_t(p)].concept_id < 0) pm.kept[p].fill_(false);  // name not in the concept bank: no prediction
        record("concept", pm);
      }
    }
    for (const auto& pr : prompts) n_no_concept += pr.concept_id < 0;
    progress.update(done, std::to_string(n_targets) + " targets", double(done), "img");
  }
  progress.finish();

  // Summary, table, report.
  json summary = json::object();
  const auto& base = ious["teacher"];
  std::printf("\n%-14s %12s  %-18s %-18s %-18s\n", "model", "trunk params", "concept IoU", "box mIoU", "point mIoU");
  for (const auto& m : models) {
    json ms = {{"trunk_params", m.trunk_parameters()}};
    std::string cells[3];
    const char* kinds[3] = {"concept", "box", "point"};
    for (int k = 0; k < 3; ++k) {
      if (!has_prompt(kinds[k])) { cells[k] = "-"; continue; }
      auto s = summarize(ious[m.name()][kinds[k]]);
      auto t = summarize(base.count(kinds[k]) ? base.at(kinds[k]) : std::vector<double>{});
      ms[kinds[k]] = {{"mean", s.mean}, {"median", s.median}, {"count", s.count},
                      {"pct_of_teacher", t.mean > 0 ? 100.0 * s.mean / t.mean : 0.0}};
      char buf[64];
      std::snprintf(buf, sizeof buf, "%.3f (%.0f%%)", s.mean, t.mean > 0 ? 100.0 * s.mean / t.mean : 0.0);
      cells[k] = buf;
    }
    char params[32];
    std::snprintf(params, sizeof params, "%.2fM", double(m.trunk_parameters()) / 1e6);
    std::printf("%-14s %12s  %-18s %-18s %-18s\n", m.name().c_str(), params, cells[0].c_str(), cells[1].c_str(),
                cells[2].c_str());
    summary[m.name()] = ms;
  }
  std::printf("(%zu images, %lld targets, %lld images skipped as unreadable)\n", selected.size(), (long long)n_targets,
              (long long)loader.num_skipped());
  if (n_no_concept > 0) spdlog::warn("{} targets have a category missing from the concept bank (scored as empty)", n_no_concept);

  std::error_code ec;
  fs::create_directories(cfg.output, ec);
  INSTINCT_CHECK(!ec, "output directory '", cfg.output, "' cannot be created: ", ec.message());
  json report = {{"format", "instinct-eval-report"}, {"version", 1},
                 {"annotations", cfg.annotations}, {"teacher", cfg.teacher},
                 {"protocol", protocol_json(cfg.protocol)},
                 {"images", selected.size()}, {"targets", n_targets}, {"images_skipped", loader.num_skipped()},
                 {"summary", summary}, {"rows", rows}};
  io::write_file_atomic(cfg.output + "/report.json", report.dump(1) + "\n");
  spdlog::info("report written to {}/report.json", cfg.output);
  return 0;
}

}  // namespace instinct::eval
