#include "instinct/distill/trainer.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <spdlog/fmt/fmt.h>

#include <chrono>
#include <cmath>
#include <functional>
#include <limits>
#include <tuple>

#include "common/fault.h"
#include "instinct/common/error.h"
#include "common/progress.h"
#include "common/signals.h"
#include "data/device_prefetch.h"
#include "instinct/model/trunk_io.h"

namespace instinct::distill {
using json = nlohmann::json;

namespace {

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

// Sums of the current log window (device tensors: the host syncs only when a row is written).
struct Window {
  std::map<std::string, at::Tensor> sums;  // "loss", the recipe's terms, "grad_norm" (per step)
  int64_t batches = 0, images = 0, steps = 0, bad_steps = 0;  // steps: good optimizer steps
  std::chrono::steady_clock::time_point t0 = std::chrono::steady_clock::now();
  void add(const std::string& k, const at::Tensor& v) {
    auto it = sums.find(k);
    if (it == sums.end()) sums.emplace(k, v.to(torch::kFloat).clone());
    else it->second += v;
  }
};

// The optimizer-step cadence after each step: evaluation when `eval.every` divides the step or on the
// last step, a checkpoint when `checkpoint.every` divides it, on the last step or on a new best, then
// SIGINT/SIGTERM: checkpoint and return the signal. With several ranks only rank 0 evaluates and
// saves, and all ranks agree on stopping.
int finish_step(TrainState& st, int64_t epoch, bool last, const TrainerConfig& cfg, Progress& progress,
                const std::function<double()>& evaluate, const std::function<void(bool)>& save, const Distributed& dist) {
  const int stopped = agree_on_stop(dist);
  bool best = false;
  if ((cfg.eval.every > 0 && st.step % cfg.eval.every == 0) || last) {
    progress.finish();
    const double m = dist.is_main() ? evaluate() : -std::numeric_limits<double>::infinity();
    best = m > st.best_metric;
    if (best) st.best_metric = m;
  }
  if ((cfg.checkpoint.every > 0 && st.step % cfg.checkpoint.every == 0) || last || best) {
    st.epoch = epoch;
    if (dist.is_main()) save(best);
  }
  if (stopped != 0) {
    progress.finish();
    st.epoch = epoch;
    spdlog::warn("signal {} received: writing a checkpoint at step {} and stopping", stopped, st.step);
    if (dist.is_main()) save(false);
  }
  return stopped;
}

}  // namespace

std::unique_ptr<data::Loader> TrainContext::held_out_loader() const {
  data::LoaderConfig lc = loader;
  lc.shuffle = false;
  lc.drop_last = false;
  lc.pin_memory = false;
  auto l = std::make_unique<data::Loader>(eval_set, pre, lc);
  l->start_epoch(0);
  return l;
}

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

StepPlan plan_steps(const OptimConfig& o, int64_t batches_per_epoch, int batch_size) {
  StepPlan p;
  p.accum = std::max(1, o.accum_steps);
  const int64_t steps_per_epoch = std::max<int64_t>(1, batches_per_epoch / p.accum);
  p.total_steps = o.max_steps > 0 ? o.max_steps : int64_t(std::ceil(o.epochs * double(steps_per_epoch)));
  p.warmup_steps = o.warmup_steps > 0 ? o.warmup_steps : int64_t(o.warmup_epochs * double(steps_per_epoch));
  p.peak_lr = o.base_lr * double(int64_t(batch_size) * p.accum) / double(o.base_batch);
  return p;
}

int train(Recipe& recipe) {
  TrainContext ctx;
  TrainerConfig& cfg = recipe.config();
  ctx.cfg = &cfg;
  // Data parallelism: rank/world from the launcher; each rank on its own GPU; rank 0 alone logs at
  // info level and writes files.
  ctx.dist = join_data_parallel(cfg.distributed, cfg.device);
  const Distributed& dist = ctx.dist;
  ctx.run = RunContext::open(cfg.run_dir, cfg.device, cfg.precision, cfg.threads, cfg.checkpoint.resume);
  const RunContext& run = ctx.run;
  torch::manual_seed(uint64_t(cfg.seed));
  ctx.pre = recipe.setup(ctx);
  ctx.student = model::StudentTrunk(cfg.student);
  auto& student = ctx.student;
  student->to(run.device);

  std::tie(ctx.train_set, ctx.eval_set) = make_datasets(cfg.data);
  data::LoaderConfig& lc = ctx.loader;
  lc.batch_size = cfg.batch_size;
  lc.num_workers = cfg.data.workers;
  lc.prefetch_batches = cfg.data.prefetch;
  lc.seed = uint64_t(cfg.seed);
  lc.max_bad_fraction = cfg.data.max_bad_fraction;
  lc.pin_memory = run.device.is_cuda();
  lc.rank = dist.rank();
  lc.world_size = dist.world_size();
  data::Loader loader(ctx.train_set, ctx.pre, lc);
  INSTINCT_CHECK(loader.batches_per_epoch() > 0, "data: ", ctx.train_set->size(),
                 " training images give no full batch of ", cfg.batch_size, " (lower batch_size)");
  // The LR scales with the global batch (all ranks).
  const StepPlan plan = plan_steps(cfg.optim, loader.batches_per_epoch(), cfg.batch_size * dist.world_size());

  // Optimizer over the trunk and the recipe's heads, EMA, state restoration.
  const auto heads = recipe.heads(ctx);
  auto params = trainable_parameters(*student);
  params.insert(params.end(), heads.begin(), heads.end());
  AdamW opt(params, cfg.optim);
  spdlog::info("optimizer: AdamW with {} kernels", kernel_name(opt.kernel()));
  model::StudentTrunk ema_model{nullptr};
  std::unique_ptr<Ema> ema;
  if (cfg.ema.enabled) {
    ema_model = model::StudentTrunk(cfg.student);
    ema_model->to(run.device);
    ema_model->eval();
  }
  model::StudentTrunkImpl* ema_ptr = ema_model ? ema_model.get() : nullptr;
  TrainState& st = ctx.state;
  if (!run.resume_from.empty()) {
    if (ema_model) ema = std::make_unique<Ema>(*student, *ema_model, cfg.ema, opt.kernel());
    // The newest checkpoint that reads back intact (a kill or a bad disk may have damaged the newest).
    c10::IValue obj;
    std::string errors;
    for (const auto& path : run.resume_candidates) {
      try {
        obj = read_checkpoint(path);
        ctx.run.resume_from = path;
        break;
      } catch (const Error& e) {
        spdlog::warn("cannot resume from {}; trying an older checkpoint", e.what());
        errors += std::string(errors.empty() ? "" : "; ") + e.what();
      }
    }
    INSTINCT_CHECK(!obj.isNone(), "no checkpoint in ", cfg.run_dir, "/checkpoints can be resumed from: ", errors,
                   " (set checkpoint.resume=never with a new run_dir to start over)");
    st = restore_checkpoint(obj, run.resume_from, *student, opt, ema.get(), ema_ptr, heads);
    spdlog::info("resumed from {} at step {} (epoch {}, batch {})", run.resume_from, st.step, st.epoch, st.batch_in_epoch);
  } else {
    init_student(*student, cfg.init);
    if (ema_model) ema = std::make_unique<Ema>(*student, *ema_model, cfg.ema, opt.kernel());
  }
  spdlog::info("student: {} ({:.1f}M params, {}x{} grid -> {}x{}x{})", model::backbone_name(student->config()),
               model::num_parameters(*student) / 1e6, student->config().grid(), student->config().grid(),
               student->config().out_channels, student->config().out_grid, student->config().out_grid);
  resume_position(st, int64_t(cfg.batch_size) * dist.world_size());
  {  // every rank starts from rank 0's trunk, EMA and heads (a fresh random init differs per process)
    std::vector<at::Tensor> sync = module_tensors(*student);
    if (ema_model)
      for (auto& t : module_tensors(*ema_model)) sync.push_back(t);
    for (const auto& h : heads) sync.push_back(h.second);
    dist.broadcast(sync);
  }
  if (dist.is_main()) run.write_resolved_config(recipe.config_yaml());
  MetricsLog metrics(dist.is_main() ? cfg.run_dir + "/metrics.jsonl" : std::string(), st.step, !run.resume_from.empty());
  recipe.prepare(ctx);

  auto log_eval = [&](const char* split, const json& r) {
    json row = {{"step", st.step}, {"split", split}};
    row.update(r);
    metrics.write(row);
    spdlog::info("eval[{}] step {}: {}", split, st.step, recipe.summarize(r));
  };
  auto evaluate = [&] {
    auto r = recipe.evaluate(ctx, *student);
    log_eval("eval", r);
    if (ema_model) log_eval("eval_ema", recipe.evaluate(ctx, *ema_model));
    return r.at(recipe.selection_metric()).get<double>();
  };
  CheckpointKeeper keeper(cfg.run_dir, cfg.checkpoint.keep_last, cfg.checkpoint.keep_best);
  auto save = [&](bool best) {
    keeper.save(st, *student, opt, ema.get(), ema_ptr, recipe.config_yaml(), recipe.name(), best, heads);
    recipe.on_checkpoint(ctx);
  };
  if (st.step == 0 && st.epoch == 0 && st.batch_in_epoch == 0 && dist.is_main()) log_eval("eval", recipe.evaluate(ctx, *student));

  // Training: one optimizer step per `accum` micro-batches.
  install_stop_handlers();
  student->freeze_batchnorm_stats(!cfg.batchnorm_stats);
  student->train();
  Progress progress(recipe.name(), plan.total_steps, cfg.log.progress);
  std::vector<at::Tensor> trained;
  for (const auto& kv : opt.params()) trained.push_back(kv.second);
  GradientReducer reducer(dist, trained, cfg.distributed);
  if (reducer.buckets() > 0) spdlog::info("gradient all-reduce overlapped with backward: {} buckets", reducer.buckets());
  data::DevicePrefetcher feed(loader, run.device);
  // Step-time split: data wait, the recipe's phases, backward, all-reduce, optimizer.
  PhaseTimer timer(cfg.profile, run.device);
  Window win;
  std::map<std::string, double> last_row;  // the last train row's averages (progress display)
  int64_t images_seen = 0;
  int micro = 0, stopped = 0;
  int64_t bad_in_a_row = 0;  // consecutive optimizer steps skipped for a non-finite gradient norm
  int64_t epoch = st.epoch;
  while (st.step < plan.total_steps && !stopped) {
    recipe.on_epoch(ctx);
    feed.start_epoch(epoch, st.batch_in_epoch);
    while (st.step < plan.total_steps) {
      timer.start();
      auto batch = feed.next();
      if (!batch) break;
      timer.lap("data");
      auto l = recipe.loss(ctx, *batch, timer);
      st.batch_in_epoch = batch->batch_index + 1;
      if (!l) continue;
      reducer.prepare(micro + 1 == plan.accum);
      (l->total / plan.accum).backward();
      timer.lap("backward");
      win.add("loss", l->total.detach());
      for (const auto& [k, v] : l->terms) win.add(k, v);
      ++win.batches;
      win.images += batch->images.size(0);
      images_seen += batch->images.size(0);
      if (++micro < plan.accum) continue;
      micro = 0;
      reducer.finish();
      if (dist.enabled()) timer.lap("allreduce");
      const at::Tensor gnorm = clip_grad_norm(opt.params(), cfg.optim.grad_clip, opt.kernel());
      const double lr = lr_at(st.step, plan.total_steps, plan.warmup_steps, plan.peak_lr, cfg.optim.warmup_lr, cfg.optim.min_lr);
      // A non-finite loss or gradient (one host sync per step) skips the update: weights, moments
      // and EMA stay at the last good step.
      const bool bad = !std::isfinite(gnorm.item<double>());
      if (bad) {
        ++win.bad_steps;
        ++bad_in_a_row;
      } else {
        win.add("grad_norm", gnorm);
        ++win.steps;
        bad_in_a_row = 0;
        opt.step(lr);
      }
      opt.zero_grad();
      if (ema && !bad) ema->update();
      timer.lap("optimizer");
      ++st.step;
      fault_point("train.step");
      const bool last = st.step >= plan.total_steps;
      if (st.step % std::max<int64_t>(cfg.log.every, 1) == 0 || last) {
        const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - win.t0).count();
        json row = {{"step", st.step}, {"split", "train"}, {"epoch", epoch}, {"lr", lr},
                    {"images_per_s", dt > 0 ? double(win.images) / dt : 0.0}};
        for (auto& [k, v] : win.sums) {  // host sync only here
          const double n = double(std::max<int64_t>(k == "grad_norm" ? win.steps : win.batches, 1));
          row[k] = last_row[k] = v.item<double>() / n;
          v.zero_();
        }
        row["bad_steps"] = win.bad_steps;
        recipe.window_stats(row, win.images);
        timer.write(row, win.batches);
        metrics.write(row);
        win.batches = win.images = win.steps = win.bad_steps = 0;
        win.t0 = std::chrono::steady_clock::now();
      }
      std::string fields = last_row.empty() ? "loss -" : fmt::format("loss {:.4g}", last_row["loss"]);
      for (const auto& [key, label] : recipe.progress_terms())
        fields += last_row.empty() ? fmt::format(" | {} -", label) : fmt::format(" | {} {:.4f}", label, last_row[key]);
      progress.update(st.step, fields + fmt::format(" | lr {:.2e}", lr), double(images_seen), "img");
      if (cfg.max_bad_steps > 0 && bad_in_a_row >= cfg.max_bad_steps) {
        progress.finish();
        st.epoch = epoch;
        if (dist.is_main()) save(false);
        fail("step ", st.step, ": the loss or gradient norm was not finite for ", bad_in_a_row,
             " steps in a row (max_bad_steps); the last good weights are in ", cfg.run_dir, "/checkpoints/",
             fmt::format("step_{:08d}.pt", st.step), " (lower optim.base_lr or check the data)");
      }
      if ((stopped = finish_step(st, epoch, last, cfg, progress, evaluate, save, dist)) != 0) break;
    }
    if (!stopped && st.step < plan.total_steps) {
      ++epoch;
      st.batch_in_epoch = 0;
      st.epoch = epoch;
    }
  }
  progress.finish();
  if (dist.is_main() && loader.num_skipped() > 0)
    spdlog::warn("{} unreadable images were skipped (see warnings above)", loader.num_skipped());
  if (stopped) {
    recipe.on_end(ctx, false);
    if (dist.is_main()) spdlog::info("stopped at step {}/{}; run the same command again to resume", st.step, plan.total_steps);
    return 128 + stopped;
  }
  if (dist.is_main()) {
    model::save_trunk_file(cfg.run_dir + "/trunk.pt", *student);
    if (ema_model) model::save_trunk_file(cfg.run_dir + "/trunk_ema.pt", *ema_model);
    spdlog::info("done: {} steps; student trunk written to {}/trunk.pt{}", st.step, cfg.run_dir,
                 ema_model ? " (EMA: trunk_ema.pt)" : "");
  }
  recipe.on_end(ctx, dist.is_main());
  return 0;
}

}  // namespace instinct::distill
