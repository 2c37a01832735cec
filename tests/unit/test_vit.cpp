#include <gtest/gtest.h>
#include <torch/torch.h>

#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "instinct/common/error.h"
#include "compat.h"
#include "instinct/io/archive.h"
#include "instinct/model/trunk_io.h"
#include "instinct/model/vit.h"
#include "test_helpers.h"

using namespace instinct;

namespace {
model::VitConfig vitb224() {
  model::VitConfig c;
  c.preset = "custom";
  c.img_size = 224; c.patch = 16; c.width = 768; c.depth = 12; c.heads = 12; c.mlp_ratio = 4;
  c.out_channels = 64; c.out_grid = 16;
  return c;
}
}  // namespace

TEST(Vit, PresetVitBaseHasInstinctSamKeysAndShapes) {
  model::VitConfig c;
  c.out_channels = 1024; c.out_grid = 72;
  model::StudentTrunk t(c);
  std::ifstream f(test::fixture_dir("vit") + "/vitb1008_keys.json");
  ASSERT_TRUE(f.good());
  auto expected = nlohmann::json::parse(f);
  auto sd = model::state_dict(*t);
  ASSERT_EQ(sd.size(), expected.size());
  for (const auto& kv : sd) {
    ASSERT_TRUE(expected.contains(kv.first)) << kv.first;
    EXPECT_EQ(kv.second.sizes().vec(), expected[kv.first].get<std::vector<int64_t>>()) << kv.first;
  }
  EXPECT_EQ(t->vit()->pos_embed.size(1), 1 + 63 * 63);
  // ~99M with the adapter, as InstinctSAM reports.
  EXPECT_NEAR(model::num_parameters(*t) / 1e6, 99.0, 1.0);
}

TEST(Vit, ForwardMatchesPythonReferenceFp32) {
  model::StudentTrunk t(vitb224());
  model::load_trunk_file(*t, test::fixture_dir("vit") + "/vitb224.pt");
  t->eval();
  auto io = io::load_object(test::fixture_dir("vit") + "/vitb224_io.pt");
  auto x = io::dict_get(io, "input", "io").toTensor();
  auto y = io::dict_get(io, "output", "io").toTensor();
  torch::NoGradGuard ng;
  auto out = t->forward(x);
  ASSERT_EQ(out.sizes(), y.sizes());
  EXPECT_LE((out - y).abs().max().item<double>(), 1e-4);
  EXPECT_GT(y.abs().max().item<double>(), 1e-2);  // the comparison is not between two near-zero tensors
}

namespace {
// A 64 px custom student (seed 0) and a copy of it with gradient checkpointing on.
std::pair<model::StudentTrunk, model::StudentTrunk> checkpointed_twins(int width, int heads) {
  model::VitConfig c;
  c.preset = "custom"; c.img_size = 64; c.patch = 16; c.width = width; c.depth = 3; c.heads = heads;
  c.out_channels = 16; c.out_grid = 5;
  torch::manual_seed(0);
  model::StudentTrunk a(c);
  c.grad_checkpointing = true;
  model::StudentTrunk b(c);
  model::load_state_dict_strict(*b, model::state_dict(*a), "copy");
  return {a, b};
}
}  // namespace

TEST(Vit, GradCheckpointingGivesIdenticalGradients) {
  auto [a, b] = checkpointed_twins(32, 2);
  auto x = torch::randn({2, 3, 64, 64});
  a->forward(x).pow(2).sum().backward();
  b->forward(x).pow(2).sum().backward();
  auto pa = a->named_parameters(), pb = b->named_parameters();
  for (const auto& kv : pa) {
    ASSERT_TRUE(pb[kv.key()].grad().defined()) << kv.key();
    EXPECT_TRUE(torch::allclose(kv.value().grad(), pb[kv.key()].grad(), 1e-5, 1e-6)) << kv.key();
  }
}

TEST(Vit, FrozenBatchNormStatsStayWhileAffineWeightsTrain) {
  model::VitConfig c;
  c.preset = "custom"; c.img_size = 64; c.patch = 16; c.width = 32; c.depth = 1; c.heads = 2;
  c.out_channels = 8; c.out_grid = 4;
  torch::manual_seed(3);
  model::StudentTrunk m(c);
  auto buffer = [&](const std::string& name) { return m->named_buffers()[name].clone(); };
  auto weight = m->named_parameters()["model.head.1.weight"];
  const auto mean0 = buffer("model.head.1.running_mean"), var0 = buffer("model.head.1.running_var");
  m->freeze_batchnorm_stats(true);
  m->train();
  EXPECT_TRUE(m->is_training());
  m->forward(torch::randn({2, 3, 64, 64}) * 3 + 1).pow(2).sum().backward();
  EXPECT_TRUE(torch::equal(buffer("model.head.1.running_mean"), mean0));
  EXPECT_TRUE(torch::equal(buffer("model.head.1.running_var"), var0));
  ASSERT_TRUE(weight.grad().defined());
  EXPECT_GT(weight.grad().abs().sum().item<double>(), 0.0);
  // A second train() (as after a held-out evaluation) keeps them frozen; unfreezing updates them.
  m->eval();
  m->train();
  m->forward(torch::randn({2, 3, 64, 64}));
  EXPECT_TRUE(torch::equal(buffer("model.head.1.running_mean"), mean0));
  m->freeze_batchnorm_stats(false);
  m->forward(torch::randn({2, 3, 64, 64}) * 3 + 1);
  EXPECT_FALSE(torch::equal(buffer("model.head.1.running_mean"), mean0));
}

// CUDA: the bf16-autocast forward (fused attention on 2.x) agrees with the CPU fp32 forward, and
// gradient checkpointing under autocast gives the same gradients as the plain backward.
TEST(Vit, CudaBf16AutocastMatchesCpuAndCheckpointingKeepsGradients) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  auto [a, b] = checkpointed_twins(64, 4);
  a->eval();
  b->eval();
  auto x = torch::randn({2, 3, 64, 64});
  const auto ref = a->forward(x);
  a->to(torch::kCUDA);
  b->to(torch::kCUDA);
  compat::CudaAutocast ac(true);
  auto ya = a->forward(x.to(torch::kCUDA));
  auto yb = b->forward(x.to(torch::kCUDA));
  EXPECT_GT(torch::cosine_similarity(ya.to(torch::kCPU, torch::kFloat).flatten(), ref.flatten(), 0).item<double>(), 0.999);
  ya.to(torch::kFloat).pow(2).sum().backward();
  yb.to(torch::kFloat).pow(2).sum().backward();
  auto pa = a->named_parameters(), pb = b->named_parameters();
  for (const auto& kv : pa) {
    ASSERT_TRUE(pb[kv.key()].grad().defined()) << kv.key();
    EXPECT_TRUE(torch::allclose(kv.value().grad(), pb[kv.key()].grad(), 1e-2, 1e-3)) << kv.key();
  }
}

TEST(Vit, TimmInitResamplesPosEmbedAndIgnoresClassifier) {
  model::VitConfig c;
  c.preset = "custom"; c.img_size = 224; c.patch = 16; c.width = 96; c.depth = 2; c.heads = 2;
  c.out_channels = 32; c.out_grid = 14;
  model::StudentTrunk t(c);
  auto head_before = model::state_dict(*t).back().second.clone();
  model::load_timm_vit(*t, test::fixture_dir("vit") + "/timm_tiny.pt");
  auto exp = io::load_object(test::fixture_dir("vit") + "/timm_tiny_expected.pt");
  EXPECT_LE((t->vit()->pos_embed - io::dict_get(exp, "pos_embed", "e").toTensor()).abs().max().item<double>(), 1e-5);
  std::map<std::string, at::Tensor> sd;
  for (auto& kv : model::state_dict(*t)) sd.emplace(kv.first, kv.second);
  auto at_key = [&](const std::string& k) {  // a student tensor that must exist under this name
    auto it = sd.find(k);
    return it == sd.end() ? at::Tensor() : it->second;
  };
  const auto fc2 = at_key("model.backbone.model.blocks.1.mlp.fc2.weight");
  ASSERT_TRUE(fc2.defined()) << "student has no model.backbone.model.blocks.1.mlp.fc2.weight";
  EXPECT_TRUE(torch::equal(fc2, io::dict_get(exp, "blocks.1.mlp.fc2.weight", "e").toTensor()));
  // Every other timm tensor lands, unchanged, under the student's prefix; the classifier is dropped.
  auto src = io::dict_get(io::load_object(test::fixture_dir("vit") + "/timm_tiny.pt"), "model", "timm").toGenericDict();
  int copied = 0;
  for (const auto& kv : src) {
    const std::string k = kv.key().toStringRef();
    if (k == "pos_embed") continue;  // resampled, checked above
    const auto got = at_key("model.backbone.model." + k);
    if (k.rfind("head.", 0) == 0) {
      EXPECT_FALSE(got.defined()) << k << ": the classifier must not be loaded";
      continue;
    }
    ASSERT_TRUE(got.defined()) << "timm key " << k << " has no student tensor model.backbone.model." << k;
    EXPECT_TRUE(torch::equal(got, kv.value().toTensor())) << k;
    ++copied;
  }
  EXPECT_EQ(copied, 2 * 12 + 5);  // 2 blocks of 12 tensors; cls_token, patch_embed.proj.{weight,bias}, norm.{weight,bias}
  EXPECT_TRUE(torch::equal(model::state_dict(*t).back().second, head_before));  // adapter head untouched
}

TEST(Vit, WrongArchitectureCheckpointIsAClearError) {
  model::VitConfig c;
  c.preset = "custom"; c.img_size = 224; c.patch = 16; c.width = 96; c.depth = 2; c.heads = 2;
  c.out_channels = 64; c.out_grid = 16;
  model::StudentTrunk t(c);
  try {
    model::load_trunk_file(*t, test::fixture_dir("vit") + "/vitb224.pt");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("vitb224.pt"), std::string::npos) << msg;
    EXPECT_NE(msg.find("shape mismatch"), std::string::npos) << msg;
    EXPECT_NE(msg.find("unexpected"), std::string::npos) << msg;  // blocks 2..11
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
}

TEST(Vit, UnknownPresetListsValidOnes) {
  model::VitConfig c;
  c.preset = "vit_huge";
  c.out_channels = 8; c.out_grid = 4;
  try {
    model::resolve_preset(c);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("vit_base"), std::string::npos);
  }
}

TEST(Vit, WrittenTrunkFileReloadsBitExact) {
  model::VitConfig c;
  c.preset = "custom"; c.img_size = 64; c.patch = 16; c.width = 32; c.depth = 2; c.heads = 2;
  c.out_channels = 16; c.out_grid = 5;
  torch::manual_seed(3);
  model::StudentTrunk a(c), b(c);
  const std::string dir = test::temp_dir("trunkrt");
  model::save_trunk_file(dir + "/t.pt", *a);
  model::load_trunk_file(*b, dir + "/t.pt");
  auto sa = model::state_dict(*a), sb = model::state_dict(*b);
  for (size_t i = 0; i < sa.size(); ++i) EXPECT_TRUE(torch::equal(sa[i].second, sb[i].second)) << sa[i].first;
  auto obj = io::load_object(dir + "/t.pt");
  EXPECT_EQ(io::dict_get(obj, "backbone", "t").toStringRef(), "vit_custom");
}

// Writer for tests/python/check_trunk_interop.py (run there with --gtest_also_run_disabled_tests):
// a trunk file, an input and the C++ output, for Python to load with weights_only=True.
TEST(VitInterop, DISABLED_WriteForPython) {
  const char* out = std::getenv("INSTINCT_IO_OUT");
  ASSERT_NE(out, nullptr);
  model::VitConfig c;
  c.preset = "custom"; c.img_size = 96; c.patch = 16; c.width = 64; c.depth = 2; c.heads = 4;
  c.out_channels = 32; c.out_grid = 8;
  torch::manual_seed(5);
  model::StudentTrunk t(c);
  t->train();
  t->forward(torch::randn({4, 3, 96, 96}));  // move BatchNorm statistics off their defaults
  t->eval();
  auto x = torch::randn({2, 3, 96, 96});
  torch::NoGradGuard ng;
  auto y = t->forward(x);
  model::save_trunk_file(std::string(out) + "/trunk.pt", *t);
  c10::impl::GenericDict d(c10::StringType::get(), c10::AnyType::get());
  d.insert("input", x);
  d.insert("output", y);
  io::save_object(std::string(out) + "/io.pt", d);
}
