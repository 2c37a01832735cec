// The training loop's pieces against independent Python references (tests/python/fixtures_trainer.py):
// the feature loss (Stage A, concept's trunk regulariser) and its valid-location mask, the step plan and LR schedule, the resumed
// epoch position; the run directory's checkpoint keeper and metrics log; the teacher-feature cache.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "distill/feature_cache.h"
#include "instinct/distill/optim.h"
#include "instinct/distill/run_utils.h"
#include "instinct/distill/feature_loss.h"
#include "instinct/distill/trainer.h"
#include "instinct/io/archive.h"
#include "instinct/model/vit.h"
#include "test_helpers.h"

using namespace instinct;
using namespace instinct::distill;
namespace fs = std::filesystem;

namespace {

nlohmann::json read_json(const std::string& path) {
  std::ifstream f(path);
  EXPECT_TRUE(f.good()) << "missing fixture " << path;
  return f ? nlohmann::json::parse(f) : nlohmann::json::array();
}

at::Tensor get(const c10::IValue& d, const std::string& k) { return io::dict_get(d, k, "stage_a_loss").toTensor(); }

bool has(const c10::IValue& d, const std::string& k) { return d.toGenericDict().contains(k); }

}  // namespace

TEST(TrainerParts, StageALossAndValidMaskMatchPyTorch) {
  const std::string file = test::fixture_dir("trainer") + "/stage_a_loss.pt";
  const auto cases = io::dict_get(io::load_object(file), "cases", file).toList();
  ASSERT_EQ(cases.size(), 4u);
  int masked = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    const c10::IValue c = cases.get(i);
    const std::string name = io::dict_get(c, "name", "case").toStringRef();
    at::Tensor valid;
    if (has(c, "pixel_valid")) {
      const auto want = get(c, "valid");
      valid = grid_valid_mask(get(c, "pixel_valid"), int(want.size(1)));
      ASSERT_TRUE(torch::equal(valid, want)) << name;
      // a padded batch has invalid cells, and cells on both sides of the content edge
      EXPECT_GT(want.logical_not().sum().item<int64_t>(), 0) << name;
      ++masked;
    }
    FeatureLossConfig cfg;
    const auto w = get(c, "w");
    cfg.w_cos = w[0].item<double>();
    cfg.w_mse = w[1].item<double>();
    auto s = get(c, "student").clone().requires_grad_(true);
    const auto l = feature_loss(s, get(c, "teacher"), valid, cfg);
    EXPECT_NEAR(l.cos_term.item<double>(), get(c, "cos_term").item<double>(), 1e-6) << name;
    EXPECT_NEAR(l.mse_term.item<double>() / get(c, "mse_term").item<double>(), 1.0, 1e-6) << name;
    EXPECT_NEAR(l.total.item<double>() / get(c, "total").item<double>(), 1.0, 1e-6) << name;
    EXPECT_NEAR(l.cosine.item<double>(), get(c, "cosine").item<double>(), 1e-6) << name;
    l.total.backward();
    const auto g = get(c, "grad");
    EXPECT_LE((s.grad().to(torch::kDouble) - g).abs().max().item<double>() / g.abs().max().item<double>(), 1e-5)
        << name;
    // outside the valid cells the student gets no gradient
    if (valid.defined())
      EXPECT_EQ(s.grad().masked_select(valid.logical_not().unsqueeze(1).expand_as(s)).abs().max().item<double>(), 0.0)
          << name;
  }
  EXPECT_EQ(masked, 3);
}

TEST(TrainerParts, StepPlanAndLrScheduleMatchPython) {
  const auto cases = read_json(test::fixture_dir("trainer") + "/schedule.json");
  ASSERT_GE(cases.size(), 6u);
  for (const auto& c : cases) {
    const std::string name = c["name"];
    const auto& o = c["optim"];
    OptimConfig cfg;
    cfg.base_lr = o["base_lr"]; cfg.base_batch = o["base_batch"]; cfg.warmup_lr = o["warmup_lr"];
    cfg.min_lr = o["min_lr"]; cfg.epochs = o["epochs"]; cfg.warmup_epochs = o["warmup_epochs"];
    cfg.max_steps = o["max_steps"]; cfg.warmup_steps = o["warmup_steps"]; cfg.accum_steps = o["accum_steps"];
    const StepPlan p = plan_steps(cfg, c["batches_per_epoch"], c["batch_size"]);
    const auto& want = c["plan"];
    EXPECT_EQ(p.accum, want["accum"].get<int>()) << name;
    EXPECT_EQ(p.total_steps, want["total_steps"].get<int64_t>()) << name;
    EXPECT_EQ(p.warmup_steps, want["warmup_steps"].get<int64_t>()) << name;
    EXPECT_DOUBLE_EQ(p.peak_lr, want["peak_lr"].get<double>()) << name;
    const auto& lrs = c["lr"];
    for (size_t s = 0; s < lrs.size(); ++s)  // every step, past the end included; stateless, so any resumed step too
      EXPECT_NEAR(lr_at(int64_t(s), p.total_steps, p.warmup_steps, p.peak_lr, cfg.warmup_lr, cfg.min_lr),
                  lrs[s].get<double>(), 1e-12 * p.peak_lr)
          << name << " step " << s;
  }
}

TEST(TrainerParts, ResumedEpochPositionMatchesPython) {
  const auto cases = read_json(test::fixture_dir("trainer") + "/resume.json");
  ASSERT_GE(cases.size(), 5u);
  for (const auto& c : cases) {
    TrainState st;
    st.images_per_batch = c["saved_images_per_batch"];
    st.batch_in_epoch = c["batch_in_epoch"];
    resume_position(st, c["images_per_batch"]);
    EXPECT_EQ(st.batch_in_epoch, c["expected_batch_in_epoch"].get<int64_t>()) << c.dump();
    EXPECT_EQ(st.images_per_batch, c["images_per_batch"].get<int64_t>()) << c.dump();
  }
}

namespace {
model::VitConfig tiny_trunk() {
  model::VitConfig c;
  c.preset = "custom"; c.img_size = 32; c.patch = 16; c.width = 16; c.depth = 1; c.heads = 2;
  c.out_channels = 4; c.out_grid = 2;
  return c;
}
}  // namespace

TEST(TrainerParts, CheckpointKeeperPrunesKeepsBestAndResumes) {
  const std::string dir = test::temp_dir("keeper");
  fs::create_directories(dir + "/checkpoints");  // RunContext::write_resolved_config makes it in a run
  torch::manual_seed(1);
  model::StudentTrunk student(tiny_trunk());
  OptimConfig oc;
  AdamW opt(trainable_parameters(*student), oc);
  CheckpointKeeper keeper(dir, /*keep_last=*/2, /*keep_best=*/true);
  TrainState st;
  std::vector<at::Tensor> weights;  // the first parameter at each save
  for (int64_t step = 1; step <= 5; ++step) {
    {
      torch::NoGradGuard ng;
      for (auto& p : student->parameters()) p.add_(0.01 * double(step));
    }
    st.step = step;
    st.epoch = step / 3;
    st.batch_in_epoch = step % 3;
    st.images_per_batch = 8;
    const bool best = step == 3;
    if (best) st.best_metric = 0.25;
    keeper.save(st, *student, opt, nullptr, nullptr, "config: " + std::to_string(step), "stageA", best);
    weights.push_back(student->parameters()[0].detach().clone());
  }
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir + "/checkpoints")) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"best.pt", "step_00000004.pt", "step_00000005.pt"}));
  EXPECT_EQ(latest_checkpoint(dir), dir + "/checkpoints/step_00000005.pt");

  // best.pt is step 3's checkpoint, kept after step 3 itself was pruned
  model::StudentTrunk other(tiny_trunk());
  AdamW opt2(trainable_parameters(*other), oc);
  auto bst = load_checkpoint(dir + "/checkpoints/best.pt", *other, opt2, nullptr, nullptr);
  EXPECT_EQ(bst.step, 3);
  EXPECT_DOUBLE_EQ(bst.best_metric, 0.25);
  EXPECT_TRUE(torch::equal(other->parameters()[0], weights[2]));

  // resuming from the newest restores weights and the position in the epoch
  auto r = load_checkpoint(latest_checkpoint(dir), *other, opt2, nullptr, nullptr);
  EXPECT_EQ(r.step, 5);
  EXPECT_EQ(r.epoch, 1);
  EXPECT_EQ(r.batch_in_epoch, 2);
  EXPECT_EQ(r.images_per_batch, 8);
  EXPECT_TRUE(torch::equal(other->parameters()[0], weights[4]));

  // keep_best off: no best.pt
  const std::string dir2 = test::temp_dir("keeper_nobest");
  fs::create_directories(dir2 + "/checkpoints");
  CheckpointKeeper plain(dir2, 1, false);
  plain.save(st, *student, opt, nullptr, nullptr, "", "stageA", true);
  EXPECT_FALSE(fs::exists(dir2 + "/checkpoints/best.pt"));
  EXPECT_TRUE(fs::exists(dir2 + "/checkpoints/step_00000005.pt"));
  fs::remove_all(dir);
  fs::remove_all(dir2);
}

TEST(TrainerParts, MetricsLogDropsRowsAfterTheCheckpointAndATornLine) {
  const std::string dir = test::temp_dir("metrics");
  const std::string path = dir + "/metrics.jsonl";
  {
    std::ofstream f(path);
    f << R"({"step": 1, "loss": 0.5})" << "\n"
      << R"({"step": 2, "loss": 0.4})" << "\n"
      << R"({"step": 3, "loss": 0.3})" << "\n"
      << R"({"step": 4, "lo)";  // a run killed mid-write
  }
  {
    MetricsLog log(path, /*resume_step=*/2, /*resuming=*/true);
    log.write({{"step", 3}, {"loss", 0.31}});
  }
  std::ifstream in(path);
  std::vector<nlohmann::json> rows;
  for (std::string line; std::getline(in, line);) rows.push_back(nlohmann::json::parse(line));  // all parse
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0]["step"], 1);
  EXPECT_EQ(rows[1]["step"], 2);
  EXPECT_EQ(rows[2]["step"], 3);
  EXPECT_DOUBLE_EQ(rows[2]["loss"].get<double>(), 0.31);
  {
    MetricsLog fresh(path, 0, /*resuming=*/false);  // a fresh run starts an empty log
  }
  EXPECT_EQ(fs::file_size(path), 0u);
  fs::remove_all(dir);
}

// A record is written once: a batch mixing stored and new images runs the teacher on all of them,
// and its results for the stored ones (different in the last bits) must not replace what earlier
// epochs trained on, or a run reading the cache back would differ from the run that filled it.
TEST(TrainerParts, FeatureCacheKeepsTheFirstRecord) {
  const std::string dir = test::temp_dir("feature_cache");
  const auto first = torch::rand({2, 4, 3, 3});
  {
    FeatureCache c(dir, R"({"id": 1})", 5, 4, 3);
    EXPECT_EQ(c.write({1, 3}, first), 0);
    EXPECT_TRUE(c.has_all({1, 3}));
    EXPECT_FALSE(c.has_all({1, 2}));
    const auto again = torch::stack({first[1] + 1.0f, torch::full({4, 3, 3}, 7.0f)});
    EXPECT_EQ(c.write({3, 2}, again), 1);  // 3 kept, 2 stored
    const auto r = c.read({1, 3, 2}).view({3, 4, 3, 3});
    EXPECT_TRUE(torch::equal(r[0], first[0].to(torch::kHalf).to(torch::kFloat)));
    EXPECT_TRUE(torch::equal(r[1], first[1].to(torch::kHalf).to(torch::kFloat)));
    EXPECT_TRUE(torch::equal(r[2], torch::full({4, 3, 3}, 7.0f)));
    EXPECT_EQ(c.hits(), 3);
    c.read({1}, /*count=*/false);
    EXPECT_EQ(c.hits(), 3);
    c.sync();
  }
  FeatureCache reopened(dir, R"({"id": 1})", 5, 4, 3);
  EXPECT_EQ(reopened.stored(), 3);
  EXPECT_TRUE(torch::equal(reopened.read({3}).view({4, 3, 3}), first[1].to(torch::kHalf).to(torch::kFloat)));
  EXPECT_NE(test::error_of([&] { FeatureCache(dir, R"({"id": 2})", 5, 4, 3); }).find("different"), std::string::npos);
  fs::remove_all(dir);
}
