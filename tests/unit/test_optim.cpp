#include <gtest/gtest.h>
#include <torch/torch.h>

#include "instinct/common/error.h"
#include "instinct/distill/optim.h"
#include "instinct/io/archive.h"
#include "instinct/model/vit.h"
#include "test_helpers.h"

using namespace instinct;

TEST(Optim, AdamWMatchesTorchOptimAdamW) {
  auto fx = io::load_object(test::fixture_dir("optim") + "/adamw.pt");
  auto names = io::dict_get(fx, "names", "fx").toList();
  auto init = io::dict_get(fx, "init", "fx").toGenericDict();
  std::vector<std::pair<std::string, at::Tensor>> params;
  for (const auto& n : names) {
    auto name = n.get().toStringRef();
    params.emplace_back(name, init.at(name).toTensor().clone().requires_grad_(true));
  }
  distill::OptimConfig cfg;
  cfg.beta1 = 0.9; cfg.beta2 = 0.99; cfg.eps = 1e-8; cfg.weight_decay = 0.05;
  distill::AdamW opt(params, cfg);
  auto lrs = io::dict_get(fx, "lrs", "fx").toList();
  auto grads = io::dict_get(fx, "grads", "fx").toList();
  auto after = io::dict_get(fx, "after", "fx").toList();
  for (size_t k = 0; k < lrs.size(); ++k) {
    auto gk = grads.get(k).toGenericDict();
    for (auto& kv : params) kv.second.mutable_grad() = gk.at(kv.first).toTensor().clone();
    opt.step(lrs.get(k).toDouble());
    auto ak = after.get(k).toGenericDict();
    for (auto& kv : params)
      EXPECT_LE((kv.second.detach() - ak.at(kv.first).toTensor()).abs().max().item<double>(), 1e-6)
          << kv.first << " step " << k;
  }
}

TEST(Optim, StateRoundTripsAndRejectsMismatch) {
  std::vector<std::pair<std::string, at::Tensor>> p{{"w", torch::ones({2, 2}).requires_grad_(true)}};
  distill::AdamW a(p, {});
  p[0].second.mutable_grad() = torch::full({2, 2}, 0.5);
  a.step(0.1);
  auto s = a.state();
  std::vector<std::pair<std::string, at::Tensor>> q{{"w", torch::ones({2, 2}).requires_grad_(true)}};
  distill::AdamW b(q, {});
  b.load_state(s, "mem");
  EXPECT_EQ(b.steps(), 1);
  std::vector<std::pair<std::string, at::Tensor>> r{{"w", torch::ones({3}).requires_grad_(true)}};
  distill::AdamW c(r, {});
  EXPECT_THROW(c.load_state(s, "mem"), Error);
}

TEST(Optim, WarmupCosineSchedule) {
  const double peak = 1e-3, wl = 1e-6, mn = 1e-5;
  EXPECT_DOUBLE_EQ(distill::lr_at(0, 100, 10, peak, wl, mn), wl);
  EXPECT_NEAR(distill::lr_at(5, 100, 10, peak, wl, mn), wl + (peak - wl) * 0.5, 1e-12);
  EXPECT_DOUBLE_EQ(distill::lr_at(10, 100, 10, peak, wl, mn), peak);
  EXPECT_NEAR(distill::lr_at(55, 100, 10, peak, wl, mn), mn + 0.5 * (peak - mn), 1e-12);
  EXPECT_NEAR(distill::lr_at(100, 100, 10, peak, wl, mn), mn, 1e-15);
  for (int s = 10; s < 100; ++s) EXPECT_GE(distill::lr_at(s, 100, 10, peak, wl, mn), distill::lr_at(s + 1, 100, 10, peak, wl, mn));
}

TEST(Optim, ClipGradNormScalesToMaxNorm) {
  std::vector<std::pair<std::string, at::Tensor>> p{{"a", torch::zeros({2}).requires_grad_(true)},
                                                    {"b", torch::zeros({1}).requires_grad_(true)}};
  p[0].second.mutable_grad() = torch::tensor({3.0f, 0.0f});
  p[1].second.mutable_grad() = torch::tensor({4.0f});
  auto n = distill::clip_grad_norm(p, 1.0);
  EXPECT_NEAR(n.item<double>(), 5.0, 1e-6);
  EXPECT_NEAR(p[0].second.grad()[0].item<double>(), 0.6, 1e-5);
  EXPECT_NEAR(p[1].second.grad()[0].item<double>(), 0.8, 1e-5);
  auto m = distill::clip_grad_norm(p, 10.0);  // below the limit: unchanged
  EXPECT_NEAR(m.item<double>(), 1.0, 1e-5);
  EXPECT_NEAR(p[1].second.grad()[0].item<double>(), 0.8, 1e-5);
}

TEST(Optim, EmaFollowsWarmupDecayAndCopiesIntegerBuffers) {
  model::VitConfig c;
  c.preset = "custom"; c.img_size = 32; c.patch = 16; c.width = 8; c.depth = 1; c.heads = 2;
  c.out_channels = 4; c.out_grid = 2;
  model::StudentTrunk src(c), shadow(c);
  distill::EmaConfig ec;
  ec.enabled = true; ec.decay = 0.9; ec.warmup = true;
  distill::Ema ema(*src, *shadow, ec);
  EXPECT_DOUBLE_EQ(ema.current_decay(), 0.0);  // 1 - (1+0)^-0.75
  auto before = src->vit()->cls_token.detach().clone();
  { torch::NoGradGuard ng; src->vit()->cls_token.add_(1.0); }
  ema.update();  // d = 0: shadow = source
  EXPECT_TRUE(torch::allclose(shadow->vit()->cls_token, before + 1.0));
  const double d1 = ema.current_decay();
  EXPECT_NEAR(d1, std::min(0.9, 1 - std::pow(2.0, -0.75)), 1e-12);
  { torch::NoGradGuard ng; src->vit()->cls_token.add_(1.0); }
  ema.update();
  EXPECT_TRUE(torch::allclose(shadow->vit()->cls_token, before + 1.0 + (1 - d1)));
}
