#include "instinct/distill/stage_a.h"

#include <spdlog/fmt/fmt.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include "instinct/common/error.h"
#include "compat.h"
#include "instinct/config/config.h"
#include "distill/feature_cache.h"
#include "instinct/teacher/bundle.h"

namespace instinct::distill {
using json = nlohmann::json;

namespace {

class StageARecipe : public Recipe {
 public:
  explicit StageARecipe(const StageAConfig& cfg) : cfg_(cfg) {}
  std::string name() const override { return "stageA"; }
  TrainerConfig& config() override { return cfg_; }
  std::string config_yaml() const override { return config::to_yaml(cfg_); }

  data::PreprocessConfig setup(TrainContext& ctx) override {
    INSTINCT_CHECK(!cfg_.teacher.bundle.empty(), "teacher.bundle must name a teacher bundle directory");
    teacher::BundleLoadOptions bo;
    bo.modules = {"trunk"};
    bo.verify_hashes = cfg_.teacher.verify_hashes;
    bo.device = ctx.run.device;  // load (and shape-check) where it runs: traced constants follow the load device
    teacher_ = std::make_unique<teacher::TeacherBundle>(teacher::TeacherBundle::load(cfg_.teacher.bundle, bo));
    const auto& t = teacher_->info();
    resolve_student_shape(cfg_.student, t);
    spdlog::info("teacher: {} ({}x{}x{} at {} px)", t.name, t.trunk_channels, t.trunk_grid, t.trunk_grid, t.image_size);
    return teacher::preprocess_config(t, cfg_.data.resize);
  }

  void prepare(TrainContext& ctx) override {
    const auto& t = teacher_->info();
    if (!cfg_.cache.dir.empty()) {  // keyed by everything that determines the features
      const auto& pre = ctx.pre;
      json id = {{"teacher_trunk_sha256", t.modules.at("trunk").second}, {"image_size", pre.image_size},
                 {"resize", pre.resize}, {"mean", pre.mean}, {"std", pre.std}, {"round_uint8", pre.round_uint8},
                 {"dataset_size", ctx.train_set->size()}, {"dataset_hash", dataset_fingerprint(*ctx.train_set)},
                 {"channels", t.trunk_channels}, {"grid", t.trunk_grid}, {"dtype", "float16"}};
      cache_ = std::make_unique<FeatureCache>(cfg_.cache.dir, id.dump(), int64_t(ctx.train_set->size()), t.trunk_channels,
                                              t.trunk_grid);
      spdlog::info("teacher-feature cache {}: {} of {} images stored", cfg_.cache.dir, cache_->stored(), ctx.train_set->size());
    }
    // Held-out set: decoded and teacher features computed once; baseline = mean teacher vector.
    auto el = ctx.held_out_loader();
    at::Tensor sum;
    double count = 0;
    while (auto b = el->next()) {
      auto feats = teacher_features(ctx, b->images.to(ctx.run.device)).cpu();
      at::Tensor gv = b->valid.defined() ? grid_valid_mask(b->valid, t.trunk_grid) : at::Tensor();
      auto w = gv.defined() ? gv.to(torch::kFloat).unsqueeze(1) : torch::ones({feats.size(0), 1, feats.size(2), feats.size(3)});
      auto s = (feats * w).sum({0, 2, 3});
      sum = sum.defined() ? sum + s : s;
      count += w.sum().item<double>();
      ev_images_.push_back(b->images);
      ev_valid_.push_back(gv);
      ev_teacher_.push_back(feats.to(torch::kHalf));
    }
    INSTINCT_CHECK(!ev_images_.empty(), "held-out set is empty (every image unreadable?)");
    mean_vec_ = sum / std::max(count, 1.0);
    double num = 0, den = 0;
    for (size_t i = 0; i < ev_teacher_.size(); ++i) {
      auto tf = ev_teacher_[i].to(torch::kFloat);
      auto c = torch::cosine_similarity(tf, mean_vec_.view({1, -1, 1, 1}).expand_as(tf), 1, 1e-8);
      auto w = ev_valid_[i].defined() ? ev_valid_[i].to(torch::kFloat) : torch::ones_like(c);
      num += (c * w).sum().item<double>();
      den += w.sum().item<double>();
    }
    baseline_ = num / std::max(den, 1.0);
    spdlog::info("held-out: {} images, mean-teacher-vector baseline cosine {:.4f}", ctx.eval_set->size(), baseline_);
  }

  void on_epoch(TrainContext& ctx) override {
    if (cache_ && ctx.dist.enabled()) {  // every rank sees the records all ranks stored so far
      cache_->sync();
      ctx.dist.barrier();
      cache_->refresh();
    }
  }

  std::optional<StepLoss> loss(TrainContext& ctx, const data::Batch& batch, PhaseTimer& timer) override {
    const auto& t = teacher_->info();
    const auto cached = [&](bool count) {
      return cache_->read(batch.indices, count).view({-1, t.trunk_channels, t.trunk_grid, t.trunk_grid}).to(ctx.run.device);
    };
    at::Tensor tfeat;
    if (cache_ && cache_->has_all(batch.indices)) {
      tfeat = cached(true);
    } else {
      tfeat = teacher_features(ctx, batch.images);
      if (cache_)  // train on what the cache holds, so a record read back later gives the same loss
        tfeat = cache_->write(batch.indices, tfeat) > 0 ? cached(false)  // some were stored before: use those
                                                        : tfeat.to(torch::kHalf).to(torch::kFloat);
    }
    timer.lap("teacher");
    at::Tensor gv = batch.valid.defined() ? grid_valid_mask(batch.valid, t.trunk_grid).to(ctx.run.device) : at::Tensor();
    FeatureLoss l;
    {
      compat::CudaAutocast ac(ctx.run.autocast);
      l = feature_loss(ctx.student->forward_resized(batch.images), tfeat, gv, cfg_.loss);
    }
    timer.lap("student_forward");
    return StepLoss{l.total, {{"loss_cos", l.cos_term.detach()}, {"loss_mse", l.mse_term.detach()}, {"cosine", l.cosine}}};
  }

  std::vector<std::pair<std::string, std::string>> progress_terms() const override { return {{"cosine", "cos"}}; }

  json evaluate(TrainContext& ctx, model::StudentTrunkImpl& m) override {
    torch::NoGradGuard ng;
    const bool was_training = m.is_training();
    m.eval();
    compat::CudaAutocast ac(ctx.run.autocast);
    const auto& dev = ctx.run.device;
    double cs = 0, cc = 0, mse = 0, loss = 0, n = 0;
    auto mv = mean_vec_.to(dev).view({1, -1, 1, 1});
    for (size_t i = 0; i < ev_images_.size(); ++i) {
      auto s = m.forward_resized(ev_images_[i].to(dev)).to(torch::kFloat);
      auto t = ev_teacher_[i].to(dev).to(torch::kFloat);
      auto valid = ev_valid_[i].defined() ? ev_valid_[i].to(dev) : at::Tensor();
      auto l = feature_loss(s, t, valid, cfg_.loss);
      auto ccos = torch::cosine_similarity(s - mv, t - mv, 1, 1e-8);
      auto w = valid.defined() ? valid.to(torch::kFloat) : torch::ones_like(ccos);
      const double k = w.sum().item<double>();
      cs += l.cosine.item<double>() * k;
      mse += l.mse_term.item<double>() * k;
      loss += l.total.item<double>() * k;
      cc += (ccos * w).sum().item<double>();
      n += k;
    }
    if (was_training) m.train();
    n = std::max(n, 1.0);
    return {{"loss", loss / n}, {"mse", mse / n}, {"cosine", cs / n}, {"cosine_baseline", baseline_},
            {"cosine_centered", cc / n}};
  }
  std::string selection_metric() const override { return "cosine"; }
  std::string summarize(const json& r) const override {
    return fmt::format("cosine {:.4f} (baseline {:.4f}, centred {:.4f}), mse {:.4g}", r["cosine"].get<double>(),
                       baseline_, r["cosine_centered"].get<double>(), r["mse"].get<double>());
  }

  void on_checkpoint(TrainContext&) override {
    if (cache_) cache_->sync();
  }
  void on_end(TrainContext&, bool) override {
    if (cache_) spdlog::info("teacher-feature cache: {} images served from {}, {} stored", cache_->hits(), cfg_.cache.dir, cache_->stored());
  }

 private:
  at::Tensor teacher_features(const TrainContext& ctx, const at::Tensor& images) const {
    torch::NoGradGuard ng;
    compat::CudaAutocast ac(ctx.run.autocast);
    return teacher_->trunk(images).to(torch::kFloat);
  }

  StageAConfig cfg_;
  std::unique_ptr<teacher::TeacherBundle> teacher_;
  std::unique_ptr<FeatureCache> cache_;
  std::vector<at::Tensor> ev_images_, ev_valid_, ev_teacher_;  // held-out batches (CPU; teacher fp16)
  at::Tensor mean_vec_;  // (C,) mean teacher vector over valid held-out locations
  double baseline_ = 0;  // cosine of mean_vec_ with the held-out teacher features
};

}  // namespace

int run_stage_a(const StageAConfig& cfg) {
  StageARecipe recipe(cfg);
  return train(recipe);
}

}  // namespace instinct::distill
