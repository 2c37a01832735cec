#include <gtest/gtest.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/torch.h>
#include <torch/version.h>

#include "instinct/common/error.h"
#include "instinct/distill/optim.h"
#include "instinct/io/archive.h"
#include "instinct/model/vit.h"
#include "test_helpers.h"

using namespace instinct;

class OptimKernels : public ::testing::TestWithParam<std::string> {};

TEST_P(OptimKernels, AdamWMatchesTorchOptimAdamW) {
  if (GetParam() == "fused" && !distill::fused_adamw_available()) GTEST_SKIP() << "no _fused_adamw_ in this LibTorch";
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
  cfg.kernel = GetParam();
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

// Every kernel applies the same update; loop and foreach run the same ops, so they agree bitwise.
// Mixed dtypes, a parameter without a gradient and resumed state exercise the grouping.
TEST_P(OptimKernels, AgreesWithTheLoopAcrossGroupsAndResume) {
  if (GetParam() == "fused" && !distill::fused_adamw_available()) GTEST_SKIP() << "no _fused_adamw_ in this LibTorch";
  auto make = [] {
    torch::manual_seed(3);
    return std::vector<std::pair<std::string, at::Tensor>>{
        {"blocks.0.w", torch::randn({5, 7}).requires_grad_(true)},
        {"blocks.0.bias", torch::randn({7}).requires_grad_(true)},
        {"unused.w", torch::randn({3, 3}).requires_grad_(true)},
        {"pos_embed", torch::randn({1, 4, 7}).requires_grad_(true)},
        {"head.w", torch::randn({4, 4}, torch::kDouble).requires_grad_(true)}};
  };
  auto ref = make(), got = make();
  distill::OptimConfig cfg;
  cfg.weight_decay = 0.1;
  cfg.kernel = "loop";
  distill::AdamW a(ref, cfg);
  cfg.kernel = GetParam();
  auto b = std::make_unique<distill::AdamW>(got, cfg);
  for (int k = 0; k < 6; ++k) {
    torch::manual_seed(100 + k);
    for (size_t i = 0; i < ref.size(); ++i) {
      if (ref[i].first == "unused.w") continue;
      auto g = torch::randn_like(ref[i].second);
      ref[i].second.mutable_grad() = g.clone();
      got[i].second.mutable_grad() = g.clone();
    }
    a.step(1e-2 * (k + 1));
    b->step(1e-2 * (k + 1));
    if (k == 2) {  // resume the kernel under test from its own state
      auto state = b->state();
      b = std::make_unique<distill::AdamW>(got, cfg);
      b->load_state(state, "mem");
    }
  }
  const double tol = GetParam() == "fused" ? 1e-6 : 0.0;
  for (size_t i = 0; i < ref.size(); ++i)
    EXPECT_LE((ref[i].second - got[i].second).abs().max().item<double>(), tol) << ref[i].first;
  EXPECT_TRUE(torch::equal(ref[2].second, make()[2].second)) << "a parameter without gradient moved";
}

INSTANTIATE_TEST_SUITE_P(Kernels, OptimKernels, ::testing::Values("loop", "foreach", "fused"));

// Whether the fused kernel is offered is checked against the dispatcher: it may only be offered when
// the op it calls is registered in this LibTorch (1.13 has none), and must be offered wherever it is
// registered from LibTorch 2.1 on (the release optim.cpp requires for it).
TEST(Optim, KernelNamesResolveOrFailClearly) {
  const bool registered = c10::Dispatcher::singleton().findSchema({"aten::_fused_adamw_", ""}).has_value();
  const bool available = distill::fused_adamw_available();
  if (!registered) EXPECT_FALSE(available) << "LibTorch " << TORCH_VERSION << " registers no aten::_fused_adamw_";
  if (registered && TORCH_VERSION_MAJOR * 100 + TORCH_VERSION_MINOR >= 201)
    EXPECT_TRUE(available) << "LibTorch " << TORCH_VERSION << " registers aten::_fused_adamw_";
  EXPECT_EQ(distill::resolve_kernel("auto", c10::DeviceType::CPU), distill::Kernel::loop);
  EXPECT_EQ(distill::resolve_kernel("auto", c10::DeviceType::CUDA),
            available ? distill::Kernel::fused : distill::Kernel::foreach);
  EXPECT_EQ(distill::resolve_kernel("loop", c10::DeviceType::CUDA), distill::Kernel::loop);
  try {
    distill::resolve_kernel("fast", c10::DeviceType::CPU);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("optim.kernel = 'fast'"), std::string::npos) << e.what();
  }
  if (available) {
    EXPECT_EQ(distill::resolve_kernel("fused", c10::DeviceType::CUDA), distill::Kernel::fused);
  } else {
    try {
      distill::resolve_kernel("fused", c10::DeviceType::CUDA);
      ADD_FAILURE() << "optim.kernel = fused accepted where the fused kernel is unavailable";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("no _fused_adamw_"), std::string::npos) << e.what();
    }
  }
}

TEST(Optim, ForeachClipAndEmaEqualTheLoop) {
  auto grads = [](int seed) {
    torch::manual_seed(seed);
    std::vector<std::pair<std::string, at::Tensor>> p{{"a", torch::zeros({20}).requires_grad_(true)},
                                                      {"b", torch::zeros({3, 4}).requires_grad_(true)},
                                                      {"c", torch::zeros({2}, torch::kDouble).requires_grad_(true)},
                                                      {"none", torch::zeros({2}).requires_grad_(true)}};
    for (size_t i = 0; i < 3; ++i) p[i].second.mutable_grad() = torch::randn_like(p[i].second) * 3;
    return p;
  };
  for (double max_norm : {0.5, 1e3}) {
    auto p = grads(1), q = grads(1);
    auto n1 = distill::clip_grad_norm(p, max_norm, distill::Kernel::loop);
    auto n2 = distill::clip_grad_norm(q, max_norm, distill::Kernel::foreach);
    EXPECT_NEAR(n1.item<double>(), n2.item<double>(), 1e-5 * n1.item<double>());
    for (size_t i = 0; i < 3; ++i)
      EXPECT_TRUE(torch::allclose(p[i].second.grad(), q[i].second.grad(), 1e-6, 0)) << p[i].first << " at " << max_norm;
    EXPECT_FALSE(q[3].second.grad().defined());
  }

  model::VitConfig c;
  c.preset = "custom"; c.img_size = 32; c.patch = 16; c.width = 8; c.depth = 1; c.heads = 2;
  c.out_channels = 4; c.out_grid = 2;
  model::StudentTrunk src(c), loop_shadow(c), foreach_shadow(c);
  distill::EmaConfig ec;
  ec.enabled = true; ec.decay = 0.9;
  distill::Ema e1(*src, *loop_shadow, ec, distill::Kernel::loop), e2(*src, *foreach_shadow, ec, distill::Kernel::foreach);
  src->train();
  for (int k = 0; k < 3; ++k) {
    {
      torch::NoGradGuard ng;
      for (auto& p : src->parameters()) p.add_(torch::randn_like(p));
    }
    src->forward(torch::randn({2, 3, 32, 32}));  // moves the BatchNorm statistics (and its counter)
    e1.update();
    e2.update();
  }
  auto a = model::state_dict(*loop_shadow), b = model::state_dict(*foreach_shadow);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(torch::equal(a[i].second, b[i].second)) << a[i].first;
}

TEST(Optim, StateRoundTripsAndRejectsMismatch) {
  using Params = std::vector<std::pair<std::string, at::Tensor>>;
  auto make = [] {
    torch::manual_seed(11);
    return Params{{"w", torch::randn({2, 3}).requires_grad_(true)}, {"b", torch::randn({3}).requires_grad_(true)}};
  };
  auto grads = [](Params& p, int seed) {
    torch::manual_seed(seed);
    for (auto& kv : p) kv.second.mutable_grad() = torch::randn_like(kv.second);
  };
  distill::OptimConfig cfg;
  cfg.kernel = "loop";
  auto p = make();
  distill::AdamW a(p, cfg);
  grads(p, 1);
  const auto g1 = p[0].second.grad().clone();
  a.step(0.1);
  // One step from zero moments: m = (1-b1) g, v = (1-b2) g^2.
  auto s1 = a.state().toGenericDict();
  auto m1 = s1.at("exp_avg").toGenericDict().at("w").toTensor();
  auto v1 = s1.at("exp_avg_sq").toGenericDict().at("w").toTensor();
  EXPECT_TRUE(torch::allclose(m1, (1 - cfg.beta1) * g1, 1e-6, 1e-7));
  EXPECT_TRUE(torch::allclose(v1, (1 - cfg.beta2) * g1 * g1, 1e-6, 1e-9));
  grads(p, 2);
  a.step(0.1);
  const auto s = a.state();

  // A fresh optimizer over a copy of the parameters, restored from the state.
  Params q{{"w", p[0].second.detach().clone().requires_grad_(true)}, {"b", p[1].second.detach().clone().requires_grad_(true)}};
  distill::AdamW b(q, cfg);
  b.load_state(s, "mem");
  EXPECT_EQ(b.steps(), 2);
  auto want = s.toGenericDict(), got = b.state().toGenericDict();
  for (const char* which : {"exp_avg", "exp_avg_sq"})
    for (const auto& kv : p) {
      const auto w = want.at(which).toGenericDict().at(kv.first).toTensor();
      EXPECT_GT(w.abs().min().item<double>(), 0.0) << which << " " << kv.first << ": the moment is not exercised";
      EXPECT_TRUE(torch::equal(got.at(which).toGenericDict().at(kv.first).toTensor(), w)) << which << " " << kv.first;
    }
  // The next step continues the original run exactly; without the moments it would not.
  Params r{{"w", q[0].second.detach().clone().requires_grad_(true)}, {"b", q[1].second.detach().clone().requires_grad_(true)}};
  distill::AdamW fresh(r, cfg);
  grads(p, 3);
  grads(q, 3);
  grads(r, 3);
  a.step(0.1);
  b.step(0.1);
  fresh.step(0.1);
  for (size_t i = 0; i < p.size(); ++i) {
    EXPECT_TRUE(torch::equal(q[i].second, p[i].second)) << p[i].first;
    EXPECT_GT((r[i].second - p[i].second).abs().max().item<double>(), 1e-4) << p[i].first << ": the check cannot see lost moments";
  }

  Params bad{{"w", torch::ones({3}).requires_grad_(true)}, {"b", torch::ones({3}).requires_grad_(true)}};
  distill::AdamW c(bad, cfg);
  const std::string shape_err = test::error_of([&] { c.load_state(s, "mem"); });
  EXPECT_NE(shape_err.find("'w' has shape [2, 3], expected [3]"), std::string::npos) << shape_err;
  Params other{{"v", torch::ones({2, 3}).requires_grad_(true)}, {"b", torch::ones({3}).requires_grad_(true)}};
  distill::AdamW d(other, cfg);
  const std::string name_err = test::error_of([&] { d.load_state(s, "mem"); });
  EXPECT_NE(name_err.find("lacks parameter 'v'"), std::string::npos) << name_err;
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
