// The shared training loop (distill/trainer.h) driven by a fake recipe without a teacher: a tiny ViT
// trunk plus a trainable bias head fitted to pooled pixels on synthetic PPM images. Checks the
// cadence (train / eval / eval_ema rows, checkpoints kept, best.pt), the per-window averaging of
// the recipe's terms, skipped micro-batches, gradient accumulation, the recipe hooks, and that a run
// stopped by a signal and resumed ends with the weights of an uninterrupted run.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <nlohmann/json.hpp>

#include "common/signals.h"
#include "instinct/distill/trainer.h"
#include "instinct/io/archive.h"
#include "test_helpers.h"

using namespace instinct;
using namespace instinct::distill;
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

struct FakeConfig : TrainerConfig {
  template <class V>
  void visit(V& v) { TrainerConfig::visit(v); }
};

class FakeRecipe : public Recipe {
 public:
  explicit FakeRecipe(FakeConfig cfg) : cfg_(std::move(cfg)) {}
  std::string name() const override { return "fake"; }
  TrainerConfig& config() override { return cfg_; }
  std::string config_yaml() const override { return "fake: true\n"; }

  data::PreprocessConfig setup(TrainContext& ctx) override {
    ++calls["setup"];
    EXPECT_EQ(ctx.cfg, &cfg_);
    cfg_.student.preset = "custom";
    cfg_.student.img_size = 32;
    cfg_.student.patch = 16;
    cfg_.student.width = 16;
    cfg_.student.depth = 1;
    cfg_.student.heads = 2;
    cfg_.student.out_channels = 3;
    cfg_.student.out_grid = 2;
    data::PreprocessConfig pre;
    pre.image_size = 32;
    pre.resize = "squash";
    return pre;
  }
  std::vector<std::pair<std::string, at::Tensor>> heads(TrainContext& ctx) override {
    ++calls["heads"];
    EXPECT_TRUE(ctx.student);  // the student exists before its heads
    bias = torch::zeros({1, 3, 1, 1}).requires_grad_(true);
    return {{"bias", bias}};
  }
  void prepare(TrainContext& ctx) override {
    ++calls["prepare"];
    auto el = ctx.held_out_loader();
    while (auto b = el->next()) held_out.push_back(b->images);
  }
  void on_epoch(TrainContext&) override { ++calls["epoch"]; }
  std::optional<StepLoss> loss(TrainContext& ctx, const data::Batch& batch, PhaseTimer& timer) override {
    if (stop_at_batch >= 0 && ++batches_seen == stop_at_batch) std::raise(SIGINT);
    if (batch.batch_index == skip_batch) return std::nullopt;
    auto l = mse(*ctx.student, batch.images);
    if (nan_batches.count(++losses_made)) l = l * std::numeric_limits<float>::quiet_NaN();
    timer.lap("fake");
    losses.push_back(l.item<double>());
    return StepLoss{l, {{"loss_fit", l.detach()}, {"ones", torch::ones({})}}};
  }
  void window_stats(json& row, int64_t images) override { row["window_images"] = images; }
  std::vector<std::pair<std::string, std::string>> progress_terms() const override { return {{"loss_fit", "fit"}}; }
  json evaluate(TrainContext&, model::StudentTrunkImpl& m) override {
    ++calls["evaluate"];
    torch::NoGradGuard ng;
    double s = 0;
    for (const auto& x : held_out) s += mse(m, x).item<double>();
    return {{"mse", s / double(held_out.size())}, {"neg_mse", -s / double(held_out.size())}};
  }
  std::string selection_metric() const override { return "neg_mse"; }
  std::string summarize(const json& r) const override { return "mse " + std::to_string(r["mse"].get<double>()); }
  void on_checkpoint(TrainContext& ctx) override { checkpoint_steps.push_back(ctx.state.step); }
  void on_end(TrainContext&, bool c) override {
    ++calls["end"];
    completed = c;
  }

  // The fit: trunk features plus the bias head against 2x2-pooled pixels.
  at::Tensor mse(model::StudentTrunkImpl& m, const at::Tensor& images) const {
    auto target = torch::adaptive_avg_pool2d(images, {2, 2});
    return (m.forward_resized(images) + bias - target).pow(2).mean();
  }

  FakeConfig cfg_;
  at::Tensor bias;
  std::vector<at::Tensor> held_out;
  std::map<std::string, int> calls;
  std::vector<double> losses;          // every non-skipped micro-batch's loss, in order
  std::vector<int64_t> checkpoint_steps;
  int64_t skip_batch = -1, stop_at_batch = -1, batches_seen = 0, losses_made = 0;
  std::set<int64_t> nan_batches;  // 1-based micro-batches whose loss is NaN
  bool completed = false;
};

// 16 small PPM images (12 train, 4 held out).
std::string make_images(const std::string& name) {
  const fs::path dir = test::temp_dir(name) + "/images";
  fs::create_directories(dir);
  for (int i = 0; i < 16; ++i) {
    std::ofstream f(dir / ("img_" + std::to_string(100 + i) + ".ppm"), std::ios::binary);
    f << "P6\n24 20\n255\n";
    for (int k = 0; k < 24 * 20 * 3; ++k) f.put(static_cast<char>((k * (3 + i % 5) + i * 29) & 0xff));
  }
  return dir.string();
}

FakeConfig base_config(const std::string& images, const std::string& run_dir) {
  FakeConfig c;
  c.run_dir = run_dir;
  c.device = "cpu";
  c.threads = 1;
  c.batch_size = 2;
  c.data.root = images;
  c.data.eval_images = 4;
  c.data.workers = 1;
  c.optim.max_steps = 7;
  c.optim.accum_steps = 2;  // 6 micro-batches per epoch -> 3 steps per epoch
  c.optim.warmup_steps = 2;
  c.optim.base_lr = 1e-2;
  c.optim.base_batch = 4;
  c.ema.enabled = true;
  c.ema.decay = 0.9;
  c.eval.every = 3;
  c.checkpoint.every = 3;
  c.checkpoint.keep_last = 2;
  c.log.every = 2;
  c.log.progress = "off";
  return c;
}

std::vector<json> read_rows(const std::string& path) {
  std::vector<json> rows;
  std::ifstream f(path);
  for (std::string line; std::getline(f, line);)
    if (!line.empty()) rows.push_back(json::parse(line));
  return rows;
}

std::vector<int64_t> steps_of(const std::vector<json>& rows, const std::string& split) {
  std::vector<int64_t> s;
  for (const auto& r : rows)
    if (r["split"] == split) s.push_back(r["step"].get<int64_t>());
  return s;
}

at::Tensor trunk_tensor(const std::string& path, const std::string& key) {
  return io::dict_get(io::dict_get(io::load_object(path), "trunk", path), key, path).toTensor();
}

}  // namespace

TEST(TrainerLoop, FakeRecipeCadenceAveragingAndHooks) {
  const std::string images = make_images("loop_cadence");
  const std::string run = test::temp_dir("loop_cadence_run");
  FakeRecipe r(base_config(images, run));
  r.skip_batch = 1;  // one of the six micro-batches of every epoch teaches nothing
  ASSERT_EQ(train(r), 0);

  EXPECT_EQ(r.calls["setup"], 1);
  EXPECT_EQ(r.calls["heads"], 1);
  EXPECT_EQ(r.calls["prepare"], 1);
  EXPECT_EQ(r.calls["end"], 1);
  EXPECT_TRUE(r.completed);
  // 5 usable micro-batches per epoch, 2 per step: 7 steps take 14 micro-batches over 3 epochs.
  EXPECT_EQ(r.losses.size(), 14u);
  EXPECT_EQ(r.calls["epoch"], 3);
  // eval at start, every 3 steps and at the end, each for the raw and the EMA student (not at step 0).
  EXPECT_EQ(r.calls["evaluate"], 1 + 2 * 3);

  const auto rows = read_rows(run + "/metrics.jsonl");
  EXPECT_EQ(steps_of(rows, "train"), (std::vector<int64_t>{2, 4, 6, 7}));
  EXPECT_EQ(steps_of(rows, "eval"), (std::vector<int64_t>{0, 3, 6, 7}));
  EXPECT_EQ(steps_of(rows, "eval_ema"), (std::vector<int64_t>{3, 6, 7}));
  // Each train row averages its window's micro-batches: rows at steps 2, 4, 6, 7 cover 4, 4, 4, 2.
  size_t first = 0;
  for (const auto& row : rows) {
    if (row["split"] != "train") continue;
    const size_t n = row["step"] == 7 ? 2 : 4;
    double mean = 0;
    for (size_t i = first; i < first + n; ++i) mean += r.losses[i] / double(n);
    first += n;
    EXPECT_NEAR(row["loss"].get<double>(), mean, 1e-6 * mean) << row.dump();
    EXPECT_NEAR(row["loss_fit"].get<double>(), mean, 1e-6 * mean) << row.dump();
    EXPECT_DOUBLE_EQ(row["ones"].get<double>(), 1.0);
    EXPECT_EQ(row["window_images"].get<int64_t>(), int64_t(n) * 2);
    EXPECT_GT(row["grad_norm"].get<double>(), 0.0);
    EXPECT_TRUE(row.contains("time_fake") && row.contains("time_backward") && row.contains("time_data")) << row.dump();
    const int64_t step = row["step"];
    const StepPlan plan = plan_steps(r.cfg_.optim, 6, 2);
    EXPECT_DOUBLE_EQ(row["lr"].get<double>(), lr_at(step - 1, 7, 2, plan.peak_lr, r.cfg_.optim.warmup_lr, r.cfg_.optim.min_lr));
  }
  // Training fits: the held-out error falls.
  const auto ev = [&] {
    std::vector<double> v;
    for (const auto& row : rows)
      if (row["split"] == "eval") v.push_back(row["mse"]);
    return v;
  }();
  EXPECT_LT(ev.back(), ev.front() * 0.9);
  // Both students moved away from the initial weights (the trainer seeds torch, then builds the student).
  torch::manual_seed(0);
  model::StudentTrunk init(r.cfg_.student);
  const auto init_w = model::state_dict(*init);
  const std::string qkv = "model.backbone.model.blocks.0.attn.qkv.weight";
  const auto w0 = std::find_if(init_w.begin(), init_w.end(), [&](const auto& kv) { return kv.first == qkv; });
  ASSERT_NE(w0, init_w.end());
  EXPECT_FALSE(torch::allclose(trunk_tensor(run + "/trunk.pt", qkv), w0->second));
  EXPECT_FALSE(torch::allclose(trunk_tensor(run + "/trunk_ema.pt", qkv), w0->second));
  // Checkpoints every 3 steps and at the end (and on each new best), the last two kept, best.pt.
  ASSERT_FALSE(r.checkpoint_steps.empty());
  EXPECT_EQ(r.checkpoint_steps.back(), 7);
  std::vector<std::string> kept;
  for (const auto& e : fs::directory_iterator(run + "/checkpoints")) kept.push_back(e.path().filename().string());
  std::sort(kept.begin(), kept.end());
  EXPECT_EQ(kept, (std::vector<std::string>{"best.pt", "step_00000006.pt", "step_00000007.pt"}));
  // The head is checkpointed; trunk.pt and trunk_ema.pt hold different weights.
  const auto ck = io::load_object(run + "/checkpoints/step_00000007.pt");
  EXPECT_TRUE(torch::equal(io::dict_get(io::dict_get(ck, "heads", "ckpt"), "bias", "heads").toTensor(), r.bias.detach()));
  EXPECT_EQ(io::dict_get(ck, "stage", "ckpt").toStringRef(), "fake");
  const std::string key = "model.backbone.model.patch_embed.proj.weight";
  EXPECT_FALSE(torch::equal(trunk_tensor(run + "/trunk.pt", key), trunk_tensor(run + "/trunk_ema.pt", key)));
}

TEST(TrainerLoop, StoppedBySignalAndResumedEqualsUninterrupted) {
  const std::string images = make_images("loop_resume");
  const std::string straight = test::temp_dir("loop_straight"), resumed = test::temp_dir("loop_resumed");
  {
    FakeRecipe r(base_config(images, straight));
    ASSERT_EQ(train(r), 0);
  }
  reset_stop_signal();
  FakeRecipe a(base_config(images, resumed));
  a.stop_at_batch = 9;  // SIGINT during step 5's first micro-batch: stop after step 5 with a checkpoint
  ASSERT_EQ(train(a), 128 + SIGINT);
  reset_stop_signal();
  EXPECT_FALSE(a.completed);
  EXPECT_EQ(a.checkpoint_steps.back(), 5);
  EXPECT_TRUE(fs::exists(resumed + "/checkpoints/step_00000005.pt"));
  EXPECT_FALSE(fs::exists(resumed + "/trunk.pt"));
  FakeRecipe b(base_config(images, resumed));
  ASSERT_EQ(train(b), 0);
  EXPECT_EQ(b.losses.size(), 4u);  // steps 6 and 7 only

  const std::string key = "model.backbone.model.blocks.0.attn.qkv.weight";
  for (const char* f : {"/trunk.pt", "/trunk_ema.pt"})
    EXPECT_TRUE(torch::equal(trunk_tensor(straight + f, key), trunk_tensor(resumed + f, key))) << f;
  // One row per step and split, the same values as the uninterrupted run, except the train row at
  // step 6, whose window the stop cut short (it averages step 6 alone after the resume).
  const auto want = read_rows(straight + "/metrics.jsonl"), got = read_rows(resumed + "/metrics.jsonl");
  ASSERT_EQ(steps_of(got, "train"), steps_of(want, "train"));
  ASSERT_EQ(steps_of(got, "eval"), steps_of(want, "eval"));
  ASSERT_EQ(steps_of(got, "eval_ema"), steps_of(want, "eval_ema"));
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    const char* key = want[i]["split"] == "train" ? "loss" : "mse";
    if (want[i]["split"] == "train" && want[i]["step"] == 6) continue;
    EXPECT_NEAR(got[i][key].get<double>(), want[i][key].get<double>(), 1e-9) << want[i].dump();
  }
}

TEST(TrainerLoop, WithoutEmaNoEmaRowsOrFiles) {
  const std::string images = make_images("loop_noema");
  const std::string run = test::temp_dir("loop_noema_run");
  FakeConfig c = base_config(images, run);
  c.ema.enabled = false;
  c.optim.max_steps = 3;
  FakeRecipe r(c);
  ASSERT_EQ(train(r), 0);
  const auto rows = read_rows(run + "/metrics.jsonl");
  EXPECT_EQ(steps_of(rows, "eval"), (std::vector<int64_t>{0, 3}));
  EXPECT_TRUE(steps_of(rows, "eval_ema").empty());
  EXPECT_TRUE(fs::exists(run + "/trunk.pt"));
  EXPECT_FALSE(fs::exists(run + "/trunk_ema.pt"));
  // the checkpoint has no EMA and resuming from it needs none
  const auto ck = io::load_object(run + "/checkpoints/step_00000003.pt");
  EXPECT_FALSE(ck.toGenericDict().contains("ema"));
  c.optim.max_steps = 4;
  FakeRecipe again(c);
  ASSERT_EQ(train(again), 0);
  EXPECT_EQ(again.losses.size(), 2u);  // one more step from the step-3 checkpoint
}

// A truncated or bit-flipped newest checkpoint is reported by name and the run resumes from the
// newest intact one; temporary files of dead writers are removed at start-up, a live writer's kept.
TEST(TrainerLoop, DamagedNewestCheckpointFallsBackAndDeadWritersTempsGo) {
  const std::string images = make_images("loop_damaged");
  for (const char* damage : {"truncate", "bitflip", "all"}) {
    SCOPED_TRACE(damage);
    const std::string run = test::temp_dir(std::string("loop_damaged_") + damage);
    FakeConfig c = base_config(images, run);
    c.checkpoint.keep_last = 3;
    c.checkpoint.keep_best = false;
    {
      FakeRecipe r(c);
      ASSERT_EQ(train(r), 0);
    }
    const std::string ck = run + "/checkpoints/";
    auto damage_file = [&](const std::string& path) {
      std::string bytes;
      {
        std::ifstream in(path, std::ios::binary);
        bytes.assign(std::istreambuf_iterator<char>(in), {});
      }
      ASSERT_GT(bytes.size(), 1000u);
      if (std::string(damage) == "truncate") bytes.resize(bytes.size() * 2 / 3);
      else bytes[bytes.size() / 2] ^= 0x10;  // inside the tensor records
      std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
    };
    damage_file(ck + "step_00000007.pt");
    if (std::string(damage) == "all") {
      damage_file(ck + "step_00000006.pt");
      damage_file(ck + "step_00000003.pt");
    }
    // A dead writer's temporary (the pid of a child that has exited) and a live one's (ours).
    const pid_t child = ::fork();
    if (child == 0) ::_exit(0);
    ::waitpid(child, nullptr, 0);
    const std::string dead = ck + "step_00000009.pt.tmp." + std::to_string(child);
    const std::string live = ck + "step_00000009.pt.tmp." + std::to_string(::getpid());
    std::ofstream(dead) << "partial";
    std::ofstream(live) << "partial";
    std::ofstream(run + "/config.yaml.tmp." + std::to_string(child)) << "partial";

    c.optim.max_steps = 8;
    FakeRecipe again(c);
    if (std::string(damage) == "all") {
      const std::string msg = test::error_of([&] { train(again); });
      for (const char* f : {"step_00000007.pt", "step_00000006.pt", "step_00000003.pt"})
        EXPECT_NE(msg.find(f), std::string::npos) << msg;
      EXPECT_NE(msg.find("can be resumed"), std::string::npos) << msg;
    } else {
      ASSERT_EQ(train(again), 0);
      EXPECT_EQ(again.losses.size(), 4u);  // steps 7 and 8 again, from step 6
      EXPECT_TRUE(fs::exists(ck + "step_00000008.pt"));
    }
    EXPECT_FALSE(fs::exists(dead));
    EXPECT_FALSE(fs::exists(run + "/config.yaml.tmp." + std::to_string(child)));
    EXPECT_TRUE(fs::exists(live));
  }
}

// The checksum covers every value: changing one element of one tensor, or a step count, changes it.
TEST(TrainerLoop, CheckpointChecksumCoversTensorsAndScalars) {
  c10::impl::GenericDict d(c10::StringType::get(), c10::AnyType::get());
  auto t = torch::arange(10, torch::kFloat);
  d.insert("trunk", io::tensor_dict({{"w", t}}));
  d.insert("step", int64_t(5));
  const std::string a = checkpoint_digest(d);
  EXPECT_EQ(a.rfind("sha256:", 0), 0u);
  EXPECT_EQ(checkpoint_digest(d), a);
  d.insert_or_assign("checksum", a);
  EXPECT_EQ(checkpoint_digest(d), a);  // the stored checksum is not part of what it covers
  t[3] = 3.5f;
  const std::string b = checkpoint_digest(d);
  EXPECT_NE(b, a);
  d.insert_or_assign("step", int64_t(6));
  EXPECT_NE(checkpoint_digest(d), b);
}

// A NaN loss skips its optimizer step (counted as bad_steps, weights untouched); too many in a row
// stop the run with an error naming the step and a checkpoint of the last good weights.
TEST(TrainerLoop, NonFiniteStepsAreSkippedThenStopTheRun) {
  const std::string images = make_images("loop_nan");
  {
    const std::string run = test::temp_dir("loop_nan_one");
    FakeRecipe r(base_config(images, run));
    r.nan_batches = {5};  // step 3's first micro-batch
    ASSERT_EQ(train(r), 0);
    const auto rows = read_rows(run + "/metrics.jsonl");
    std::map<int64_t, int64_t> bad;
    for (const auto& row : rows)
      if (row["split"] == "train") bad[row["step"]] = row["bad_steps"];
    EXPECT_EQ(bad, (std::map<int64_t, int64_t>{{2, 0}, {4, 1}, {6, 0}, {7, 0}}));
    const auto w = trunk_tensor(run + "/trunk.pt", "model.backbone.model.blocks.0.attn.qkv.weight");
    EXPECT_TRUE(torch::isfinite(w).all().item<bool>());
    EXPECT_TRUE(torch::isfinite(r.bias).all().item<bool>());
  }
  const std::string run = test::temp_dir("loop_nan_many");
  FakeConfig c = base_config(images, run);
  c.max_bad_steps = 2;
  FakeRecipe r(c);
  for (int64_t b = 5; b < 100; ++b) r.nan_batches.insert(b);  // from step 3 on
  const std::string msg = test::error_of([&] { train(r); });
  EXPECT_NE(msg.find("step 4: the loss or gradient norm was not finite for 2 steps in a row"), std::string::npos) << msg;
  const std::string ck = run + "/checkpoints/step_00000004.pt";
  ASSERT_TRUE(fs::exists(ck)) << msg;
  EXPECT_NE(msg.find(ck), std::string::npos) << msg;
  const auto w = trunk_tensor(ck, "model.backbone.model.blocks.0.attn.qkv.weight");
  EXPECT_TRUE(torch::isfinite(w).all().item<bool>());
  // steps 3 and 4 were both skipped: the weights are still those after step 2 (checkpointed at step 3)
  EXPECT_TRUE(torch::equal(w, trunk_tensor(run + "/checkpoints/step_00000003.pt", "model.backbone.model.blocks.0.attn.qkv.weight")));
}
