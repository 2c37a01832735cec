#include "instinct/distill/stage_a.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <chrono>
#include <csignal>
#include <limits>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <thread>

#include "instinct/common/error.h"
#include "instinct/common/progress.h"
#include "instinct/common/signals.h"
#include "instinct/compat.h"
#include "instinct/config/config.h"
#include "instinct/data/dataset.h"
#include "instinct/data/device_prefetch.h"
#include "instinct/data/loader.h"
#include "instinct/distill/feature_cache.h"
#include "instinct/distill/run_utils.h"
#include "instinct/io/archive.h"
#include "instinct/io/atomic_file.h"
#include "instinct/model/trunk_io.h"
#include "instinct/teacher/bundle.h"

namespace instinct::distill {
namespace fs = std::filesystem;
using json = nlohmann::json;

StageALoss stage_a_loss(const at::Tensor& student, const at::Tensor& teacher, const at::Tensor& valid,
                        const LossConfig& cfg) {
  INSTINCT_CHECK(student.sizes() == teacher.sizes(), "stage A: student features ", student.sizes(),
                 " do not match teacher features ", teacher.sizes());
  auto s = student.to(torch::kFloat), t = teacher.to(torch::kFloat);
  auto cos = torch::cosine_similarity(s, t, 1, 1e-8);  // (B,G,G)
  auto se = (s - t).pow(2).sum(1);                       // (B,G,G)
  StageALoss out;
  if (valid.defined()) {
    auto w = valid.to(torch::kFloat);
    auto n = w.sum().clamp_min(1.0);
    out.cos_term = ((1 - cos) * w).sum() / n;
    out.mse_term = (se * w).sum() / n;
    out.cosine = ((cos * w).sum() / n).detach();
  } else {
    out.cos_term = (1 - cos).mean();
    out.mse_term = se.mean();
    out.cosine = cos.mean().detach();
  }
  out.total = cfg.w_cos * out.cos_term + cfg.w_mse * out.mse_term;
  return out;
}

at::Tensor grid_valid_mask(const at::Tensor& pixel_valid, int grid) {
  auto v = pixel_valid.to(torch::kFloat).unsqueeze(1);
  return torch::adaptive_avg_pool2d(v, {grid, grid}).squeeze(1) > 0.5;
}

namespace {

struct EvalSet {
  std::vector<at::Tensor> images, valid;  // per batch, CPU
  std::vector<at::Tensor> teacher;        // per batch, fp16 CPU
  at::Tensor mean_vec;                     // (C,) mean teacher vector over valid locations
  double baseline = 0;                     // cosine of mean_vec with the teacher features
};

struct EvalResult {
  double cosine = 0, cosine_centered = 0, mse = 0, loss = 0;
};

std::shared_ptr<data::Dataset> make_dataset(const DataConfig& d, bool eval) {
  const std::string root = eval ? d.eval_root : d.root;
  if (d.type == "folder") return std::make_shared<data::ImageFolderDataset>(root);
  if (d.type == "coco") {
    INSTINCT_CHECK(!d.annotations.empty(), "data.annotations must name a COCO json when data.type is coco");
    return std::make_shared<data::CocoImageDataset>(d.annotations, root);
  }
  fail("data.type '", d.type, "' is unknown; valid: folder, coco");
}

// Restricts a dataset to a contiguous index range (train/held-out split of one folder).
class SubsetDataset : public data::Dataset {
 public:
  SubsetDataset(std::shared_ptr<data::Dataset> base, size_t begin, size_t end) : base_(std::move(base)), b_(begin), e_(end) {}
  size_t size() const override { return e_ - b_; }
  std::string path(size_t i) const override { return base_->path(b_ + i); }
  int64_t image_id(size_t i) const override { return base_->image_id(b_ + i); }

 private:
  std::shared_ptr<data::Dataset> base_;
  size_t b_, e_;
};

}  // namespace

std::pair<std::shared_ptr<data::Dataset>, std::shared_ptr<data::Dataset>> make_datasets(const DataConfig& d) {
  std::shared_ptr<data::Dataset> train = make_dataset(d, false);
  if (d.eval_root.empty()) {
    const size_t n = train->size();
    INSTINCT_CHECK(size_t(d.eval_images) < n, "data.eval_images ", d.eval_images, " must be smaller than the ", n,
                   " images in data.root '", d.root, "'");
    return {std::make_shared<SubsetDataset>(train, 0, n - size_t(d.eval_images)),
            std::make_shared<SubsetDataset>(train, n - size_t(d.eval_images), n)};
  }
  auto full = make_dataset(d, true);
  return {train, std::make_shared<SubsetDataset>(full, 0, std::min(full->size(), size_t(d.eval_images)))};
}

void init_student(model::StudentTrunkImpl& student, const InitConfig& init) {
  if (init.from == "instinct") {
    model::load_trunk_file(student, init.path);
    spdlog::info("initialised student from trunk file {}", init.path);
  } else if (init.from == "timm") {
    model::load_timm_vit(student, init.path);
    spdlog::info("initialised student ViT from timm weights {}", init.path);
  } else {
    INSTINCT_CHECK(init.from == "random", "init.from '", init.from, "' is unknown; valid: random, instinct, timm");
  }
}

at::Tensor resize_images(const at::Tensor& images, int size) {
  if (images.size(2) == size && images.size(3) == size) return images;
  namespace F = torch::nn::functional;
  return F::interpolate(images, F::InterpolateFuncOptions().size(std::vector<int64_t>{size, size}).mode(torch::kBilinear).align_corners(false));
}

StepPlan plan_steps(const OptimConfig& o, int64_t batches_per_epoch, int batch_size) {
  StepPlan p;
  p.accum = std::max(1, o.accum_steps);
  const int64_t steps_per_epoch = std::max<int64_t>(1, batches_per_epoch / p.accum);
  p.total_steps = o.max_steps > 0 ? o.max_steps : int64_t(std::ceil(o.epochs * double(steps_per_epoch)));
  p.warmup_steps = o.warmup_steps > 0 ? o.warmup_steps : int64_t(o.warmup_epochs * double(steps_per_epoch));
  p.peak_lr = o.base_lr * double(int64_t(batch_size) * p.accum) / double(o.base_batch);
  return p;
}

int finish_step(TrainState& st, int64_t epoch, bool last, const EvalConfig& eval, const CheckpointConfig& checkpoint,
                Progress& progress, const std::function<double()>& evaluate_main, const std::function<void(bool)>& save_main,
                const Distributed& dist) {
  const int stopped = agree_on_stop(dist);
  auto evaluate = [&] { return dist.is_main() ? evaluate_main() : -std::numeric_limits<double>::infinity(); };
  auto save = [&](bool best) {
    if (dist.is_main()) save_main(best);
  };
  bool best = false;
  if ((eval.every > 0 && st.step % eval.every == 0) || last) {
    progress.finish();
    const double m = evaluate();
    best = m > st.best_metric;
    if (best) st.best_metric = m;
  }
  if ((checkpoint.every > 0 && st.step % checkpoint.every == 0) || last || best) {
    st.epoch = epoch;
    save(best);
  }
  if (stopped != 0) {
    progress.finish();
    st.epoch = epoch;
    spdlog::warn("signal {} received: writing a checkpoint at step {} and stopping", stopped, st.step);
    save(false);
  }
  return stopped;
}

int finish_run(int stopped, const TrainState& st, int64_t total_steps, int64_t skipped_images,
               const std::string& run_dir, model::StudentTrunkImpl& student, model::StudentTrunkImpl* ema_model) {
  if (skipped_images > 0) spdlog::warn("{} unreadable images were skipped (see warnings above)", skipped_images);
  if (stopped) {
    spdlog::info("stopped at step {}/{}; run the same command again to resume", st.step, total_steps);
    return 128 + stopped;
  }
  model::save_trunk_file(run_dir + "/trunk.pt", student);
  if (ema_model) model::save_trunk_file(run_dir + "/trunk_ema.pt", *ema_model);
  spdlog::info("done: {} steps; student trunk written to {}/trunk.pt{}", st.step, run_dir,
               ema_model ? " (EMA: trunk_ema.pt)" : "");
  return 0;
}

std::vector<at::Tensor> module_tensors(torch::nn::Module& m) {
  std::vector<at::Tensor> v;
  for (auto& p : m.parameters()) v.push_back(p);
  for (auto& b : m.buffers()) v.push_back(b);
  return v;
}

void resume_position(TrainState& st, int64_t images_per_batch) {
  if (st.images_per_batch > 0 && st.images_per_batch != images_per_batch && st.batch_in_epoch > 0) {
    // Another batch size or world size than the checkpoint's: continue after the images consumed.
    const int64_t seen = st.batch_in_epoch * st.images_per_batch;
    st.batch_in_epoch = seen / images_per_batch;
    spdlog::info("resume with {} instead of {} images per step: continuing the epoch at batch {} ({} of {} images "
                 "re-used)", images_per_batch, st.images_per_batch, st.batch_in_epoch,
                 seen - st.batch_in_epoch * images_per_batch, seen);
  }
  st.images_per_batch = images_per_batch;
}

int run_stage_a(const StageAConfig& cfg_in) {
  StageAConfig cfg = cfg_in;
  // Data parallelism: rank/world from the launcher; each rank on its own GPU; rank 0 alone logs at
  // info level and writes files.
  const Distributed dist = join_data_parallel(cfg.distributed, cfg.device);
  RunContext run = RunContext::open(cfg.run_dir, cfg.device, cfg.precision, cfg.threads, cfg.checkpoint.resume);
  torch::manual_seed(uint64_t(cfg.seed));

  // Teacher (trunk only) and the student shaped to it.
  INSTINCT_CHECK(!cfg.teacher.bundle.empty(), "teacher.bundle must name a teacher bundle directory");
  teacher::BundleLoadOptions bopts;
  bopts.modules = {"trunk"};
  bopts.verify_hashes = cfg.teacher.verify_hashes;
  bopts.device = run.device;  // load (and shape-check) where it runs: traced constants follow the load device
  auto teacher = teacher::TeacherBundle::load(cfg.teacher.bundle, bopts);
  const auto& tinfo = teacher.info();
  resolve_student_shape(cfg.student, tinfo);

  data::PreprocessConfig pre;
  pre.image_size = tinfo.image_size;
  pre.resize = cfg.data.resize.empty() ? tinfo.resize : cfg.data.resize;
  pre.mean = tinfo.pixel_mean;
  pre.std = tinfo.pixel_std;

  model::StudentTrunk student(cfg.student);
  model::StudentTrunk ema_model{nullptr};
  student->to(run.device);
  spdlog::info("student: {} ({:.1f}M params, {}x{} grid -> {}x{}x{}), teacher: {} ({}x{}x{} at {} px)",
               model::backbone_name(student->config()), model::num_parameters(*student) / 1e6,
               student->config().grid(), student->config().grid(), student->config().out_channels,
               student->config().out_grid, student->config().out_grid, tinfo.name, tinfo.trunk_channels,
               tinfo.trunk_grid, tinfo.trunk_grid, tinfo.image_size);

  // Data: training set and held-out set.
  auto datasets = make_datasets(cfg.data);
  std::shared_ptr<data::Dataset> train_set = datasets.first, eval_set_ds = datasets.second;
  data::LoaderConfig lc;
  lc.batch_size = cfg.batch_size;
  lc.num_workers = cfg.data.workers;
  lc.prefetch_batches = cfg.data.prefetch;
  lc.seed = uint64_t(cfg.seed);
  lc.max_bad_fraction = cfg.data.max_bad_fraction;
  lc.pin_memory = run.device.is_cuda();
  lc.rank = dist.rank();
  lc.world_size = dist.world_size();
  data::Loader loader(train_set, pre, lc);
  const int64_t batches_per_epoch = loader.batches_per_epoch();
  INSTINCT_CHECK(batches_per_epoch > 0, "data: ", train_set->size(), " training images give no full batch of ",
                 cfg.batch_size, " (lower batch_size)");
  // The LR scales with the global batch (all ranks).
  const StepPlan plan = plan_steps(cfg.optim, batches_per_epoch, cfg.batch_size * dist.world_size());
  const int accum = plan.accum;
  const int64_t total_steps = plan.total_steps, warmup_steps = plan.warmup_steps;
  const double peak_lr = plan.peak_lr;

  // Optimiser, EMA, state restoration.
  AdamW opt(trainable_parameters(*student), cfg.optim);
  spdlog::info("optimizer: AdamW with {} kernels", kernel_name(opt.kernel()));
  std::unique_ptr<Ema> ema;
  if (cfg.ema.enabled) {
    ema_model = model::StudentTrunk(cfg.student);
    ema_model->to(run.device);
    ema_model->eval();
    ema = std::make_unique<Ema>(*student, *ema_model, cfg.ema, opt.kernel());
  }
  TrainState st;
  if (!run.resume_from.empty()) {
    st = load_checkpoint(run.resume_from, *student, opt, ema.get(), ema ? ema_model.get() : nullptr);
    spdlog::info("resumed from {} at step {} (epoch {}, batch {})", run.resume_from, st.step, st.epoch, st.batch_in_epoch);
  } else {
    init_student(*student, cfg.init);
  }
  if (ema && run.resume_from.empty()) ema = std::make_unique<Ema>(*student, *ema_model, cfg.ema, opt.kernel());
  resume_position(st, int64_t(cfg.batch_size) * dist.world_size());
  // Every rank starts from rank 0's weights (a fresh random init differs per process otherwise).
  dist.broadcast(module_tensors(*student));
  if (ema_model) dist.broadcast(module_tensors(*ema_model));
  if (dist.is_main()) run.write_resolved_config(config::to_yaml(cfg));
  MetricsLog metrics(dist.is_main() ? cfg.run_dir + "/metrics.jsonl" : std::string(), st.step, !run.resume_from.empty());

  // Teacher-feature cache (keyed by everything that determines the features).
  std::unique_ptr<FeatureCache> cache;
  if (!cfg.cache.dir.empty()) {
    json id = {{"teacher_trunk_sha256", tinfo.modules.at("trunk").second}, {"image_size", pre.image_size},
               {"resize", pre.resize}, {"mean", pre.mean}, {"std", pre.std}, {"round_uint8", pre.round_uint8},
               {"dataset_size", train_set->size()}, {"dataset_hash", dataset_fingerprint(*train_set)},
               {"channels", tinfo.trunk_channels}, {"grid", tinfo.trunk_grid}, {"dtype", "float16"}};
    cache = std::make_unique<FeatureCache>(cfg.cache.dir, id.dump(), int64_t(train_set->size()), tinfo.trunk_channels,
                                           tinfo.trunk_grid);
    spdlog::info("teacher-feature cache {}: {} of {} images stored", cfg.cache.dir, cache->stored(), train_set->size());
  }

  auto teacher_features = [&](const at::Tensor& images) {
    torch::NoGradGuard ng;
    compat::CudaAutocast ac(run.autocast);
    return teacher.trunk(images).to(torch::kFloat);
  };
  auto student_input = [&](const at::Tensor& images) { return resize_images(images, student->config().img_size); };

  // Held-out set: decoded and teacher features computed once; baseline = mean teacher vector.
  EvalSet ev;
  {
    data::LoaderConfig elc = lc;
    elc.shuffle = false;
    elc.drop_last = false;
    elc.pin_memory = false;
    data::Loader el(eval_set_ds, pre, elc);
    el.start_epoch(0);
    at::Tensor sum;
    double count = 0;
    while (auto b = el.next()) {
      auto feats = teacher_features(b->images.to(run.device)).cpu();
      at::Tensor gv = b->valid.defined() ? grid_valid_mask(b->valid, tinfo.trunk_grid) : at::Tensor();
      auto w = gv.defined() ? gv.to(torch::kFloat).unsqueeze(1) : torch::ones({feats.size(0), 1, feats.size(2), feats.size(3)});
      auto s = (feats * w).sum({0, 2, 3});
      sum = sum.defined() ? sum + s : s;
      count += w.sum().item<double>();
      ev.images.push_back(b->images);
      ev.valid.push_back(gv);
      ev.teacher.push_back(feats.to(torch::kHalf));
    }
    INSTINCT_CHECK(!ev.images.empty(), "held-out set is empty (every image unreadable?)");
    ev.mean_vec = sum / std::max(count, 1.0);
    double num = 0, den = 0;
    for (size_t i = 0; i < ev.teacher.size(); ++i) {
      auto t = ev.teacher[i].to(torch::kFloat);
      auto c = torch::cosine_similarity(t, ev.mean_vec.view({1, -1, 1, 1}).expand_as(t), 1, 1e-8);
      auto w = ev.valid[i].defined() ? ev.valid[i].to(torch::kFloat) : torch::ones_like(c);
      num += (c * w).sum().item<double>();
      den += w.sum().item<double>();
    }
    ev.baseline = num / std::max(den, 1.0);
    spdlog::info("held-out: {} images, mean-teacher-vector baseline cosine {:.4f}", eval_set_ds->size(), ev.baseline);
  }

  auto evaluate = [&](model::StudentTrunkImpl& m) {
    torch::NoGradGuard ng;
    const bool was_training = m.is_training();
    m.eval();
    compat::CudaAutocast ac(run.autocast);
    double cs = 0, cc = 0, mse = 0, loss = 0, n = 0;
    auto mv = ev.mean_vec.to(run.device).view({1, -1, 1, 1});
    for (size_t i = 0; i < ev.images.size(); ++i) {
      auto s = m.forward(student_input(ev.images[i].to(run.device))).to(torch::kFloat);
      auto t = ev.teacher[i].to(run.device).to(torch::kFloat);
      auto valid = ev.valid[i].defined() ? ev.valid[i].to(run.device) : at::Tensor();
      auto l = stage_a_loss(s, t, valid, cfg.loss);
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
    return EvalResult{cs / n, cc / n, mse / n, loss / n};
  };
  auto log_eval = [&](const char* split, const EvalResult& r) {
    metrics.write({{"step", st.step}, {"split", split}, {"loss", r.loss}, {"mse", r.mse}, {"cosine", r.cosine},
                   {"cosine_baseline", ev.baseline}, {"cosine_centered", r.cosine_centered}});
    spdlog::info("eval[{}] step {}: cosine {:.4f} (baseline {:.4f}, centred {:.4f}), mse {:.4g}", split, st.step,
                 r.cosine, ev.baseline, r.cosine_centered, r.mse);
  };
  CheckpointKeeper keeper(cfg.run_dir, cfg.checkpoint.keep_last, cfg.checkpoint.keep_best);
  auto save_ckpt = [&](bool best) {
    keeper.save(st, *student, opt, ema.get(), ema ? ema_model.get() : nullptr, config::to_yaml(cfg), "stageA", best);
    if (cache) cache->sync();
  };

  if (st.step == 0 && st.epoch == 0 && st.batch_in_epoch == 0 && dist.is_main()) {
    auto r = evaluate(*student);
    log_eval("eval", r);
  }

  // Training loop: one optimizer step per `accum` micro-batches.
  install_stop_handlers();
  student->freeze_batchnorm_stats(!cfg.batchnorm_stats);
  student->train();
  Progress progress("stageA", total_steps, cfg.log.progress);
  double win_loss = std::nan(""), win_cos = 0, win_cosine = 0, win_mse = 0;
  int64_t win_batches = 0, win_images = 0;
  auto win_t0 = std::chrono::steady_clock::now();
  int64_t images_seen = 0;
  int micro = 0;
  at::Tensor acc_loss = torch::zeros({}, torch::TensorOptions().device(run.device));
  at::Tensor acc_cos = acc_loss.clone(), acc_mse = acc_loss.clone(), acc_cosine = acc_loss.clone();
  at::Tensor acc_gnorm = acc_loss.clone();  // pre-clip global gradient norm, summed over the window's steps
  int64_t win_steps = 0;
  int stopped = 0;
  int64_t epoch = st.epoch;
  GradientReducer reducer(dist, student->parameters(), cfg.distributed);
  if (reducer.buckets() > 0) spdlog::info("gradient all-reduce overlapped with backward: {} buckets", reducer.buckets());
  data::DevicePrefetcher feed(loader, run.device);
  // Step-time split: data wait, teacher, student forward + loss, backward, all-reduce, optimizer.
  PhaseTimer timer(cfg.profile, run.device);
  while (st.step < total_steps && !stopped) {
    if (cache && dist.enabled()) {  // every rank sees the records all ranks stored so far
      cache->sync();
      dist.barrier();
      cache->refresh();
    }
    feed.start_epoch(epoch, st.batch_in_epoch);
    while (st.step < total_steps) {
      timer.start();
      auto batch = feed.next();
      if (!batch) break;
      timer.lap("data");
      auto images = batch->images;
      at::Tensor tfeat;
      if (cache && cache->has_all(batch->indices)) {
        tfeat = cache->read(batch->indices).view({-1, tinfo.trunk_channels, tinfo.trunk_grid, tinfo.trunk_grid}).to(run.device);
      } else {
        tfeat = teacher_features(images);
        if (cache) cache->write(batch->indices, tfeat);
      }
      timer.lap("teacher");
      at::Tensor gv = batch->valid.defined() ? grid_valid_mask(batch->valid, tinfo.trunk_grid).to(run.device) : at::Tensor();
      StageALoss l;
      {
        compat::CudaAutocast ac(run.autocast);
        auto sfeat = student->forward(student_input(images));
        l = stage_a_loss(sfeat, tfeat, gv, cfg.loss);
      }
      timer.lap("student_forward");
      reducer.prepare(micro + 1 == accum);
      (l.total / accum).backward();
      timer.lap("backward");
      acc_loss += l.total.detach();
      acc_cos += l.cos_term.detach();
      acc_mse += l.mse_term.detach();
      acc_cosine += l.cosine;
      ++win_batches;
      win_images += images.size(0);
      images_seen += images.size(0);
      st.batch_in_epoch = batch->batch_index + 1;
      if (++micro < accum) continue;
      micro = 0;
      reducer.finish();
      if (dist.enabled()) timer.lap("allreduce");
      acc_gnorm += clip_grad_norm(opt.params(), cfg.optim.grad_clip, opt.kernel()).to(acc_gnorm.device());
      ++win_steps;
      const double lr = lr_at(st.step, total_steps, warmup_steps, peak_lr, cfg.optim.warmup_lr, cfg.optim.min_lr);
      opt.step(lr);
      opt.zero_grad();
      if (ema) ema->update();
      timer.lap("optimizer");
      ++st.step;
      const bool last = st.step >= total_steps;
      if (st.step % std::max<int64_t>(cfg.log.every, 1) == 0 || last) {
        // Host sync only here: losses accumulated on the device since the last log row.
        const double nb = double(std::max<int64_t>(win_batches, 1));
        win_loss = acc_loss.item<double>() / nb;
        win_cos = acc_cos.item<double>() / nb;
        win_mse = acc_mse.item<double>() / nb;
        win_cosine = acc_cosine.item<double>() / nb;
        const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - win_t0).count();
        nlohmann::json row = {{"step", st.step}, {"split", "train"}, {"epoch", epoch}, {"loss", win_loss},
                              {"loss_cos", win_cos}, {"loss_mse", win_mse}, {"cosine", win_cosine}, {"lr", lr},
                              {"grad_norm", acc_gnorm.item<double>() / double(std::max<int64_t>(win_steps, 1))},
                              {"images_per_s", dt > 0 ? double(win_images) / dt : 0.0}};
        timer.write(row, win_batches);
        metrics.write(row);
        acc_loss.zero_(); acc_cos.zero_(); acc_mse.zero_(); acc_cosine.zero_(); acc_gnorm.zero_();
        win_batches = win_images = win_steps = 0;
        win_t0 = std::chrono::steady_clock::now();
      }
      char fields[160];
      if (std::isnan(win_loss)) std::snprintf(fields, sizeof fields, "loss - | cos - | lr %.2e", lr);
      else std::snprintf(fields, sizeof fields, "loss %.4g | cos %.4f | lr %.2e", win_loss, win_cosine, lr);
      progress.update(st.step, fields, double(images_seen), "img");
      auto eval_both = [&] {
        auto r = evaluate(*student);
        log_eval("eval", r);
        if (ema) log_eval("eval_ema", evaluate(*ema_model));
        return r.cosine;
      };
      if ((stopped = finish_step(st, epoch, last, cfg.eval, cfg.checkpoint, progress, eval_both, save_ckpt, dist)) != 0) break;
    }
    if (!stopped && st.step < total_steps) {
      ++epoch;
      st.batch_in_epoch = 0;
      st.epoch = epoch;
    }
  }
  progress.finish();
  if (cache) spdlog::info("teacher-feature cache: {} images served from {}, {} stored", cache->hits(), cfg.cache.dir, cache->stored());
  if (!dist.is_main()) return stopped ? 128 + stopped : 0;
  return finish_run(stopped, st, total_steps, loader.num_skipped(), cfg.run_dir, *student,
                    ema ? ema_model.get() : nullptr);
}

}  // namespace instinct::distill
