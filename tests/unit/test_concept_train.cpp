// Concept distillation mechanics: gradients reach the student trunk through the frozen TorchScript
// neck and grounding modules, the frozen modules themselves never change, and a step on the
// concept losses updates every trunk parameter.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "compat.h"
#include "instinct/distill/concept_loss.h"
#include "instinct/distill/optim.h"
#include "instinct/distill/run_utils.h"
#include "instinct/teacher/bundle.h"
#include "test_helpers.h"

using namespace instinct;

TEST(ConceptTraining, GradientsReachTrunkThroughFrozenModulesWhichStayUnchanged) {
  teacher::BundleLoadOptions opts;
  opts.modules = {"trunk", "detector_neck", "grounding", "concept_bank"};
  auto bundle = teacher::TeacherBundle::load(test::fixture_dir("teacher") + "/bundle", opts);
  const auto& info = bundle.info();
  model::VitConfig vc;
  vc.preset = "custom";
  vc.img_size = info.image_size;
  vc.patch = 32;
  vc.width = 48;
  vc.depth = 2;
  vc.heads = 2;
  distill::resolve_student_shape(vc, info);
  torch::manual_seed(0);
  model::StudentTrunk student(vc);
  student->train();

  auto pixels = torch::randn({2, 3, info.image_size, info.image_size});
  auto ids = torch::tensor({0, 1}, torch::kLong);
  auto [text, pad] = bundle.concepts(ids);
  auto idx = torch::tensor({0, 1}, torch::kLong);
  auto teacher_path = [&] {
    torch::NoGradGuard ng;
    auto [a, b, c] = bundle.detector_neck(bundle.trunk(pixels));
    auto g = bundle.grounding(a, b, c, text, pad);
    return std::vector<at::Tensor>{g.logits.clone(), g.boxes.clone(), g.masks.clone(), g.presence.clone(), g.memory.clone()};
  };
  const auto before = teacher_path();

  // Student path with the concept losses against the teacher's own outputs as targets.
  auto [s0, s1, s2] = bundle.detector_neck(student->forward(pixels));
  auto g = bundle.grounding(s0, s1, s2, text, pad);
  std::vector<at::Tensor> tboxes{before[1][0].narrow(0, 0, 3), before[1][1].narrow(0, 0, 2)};
  std::vector<at::Tensor> tmasks{before[2][0].narrow(0, 0, 3), before[2][1].narrow(0, 0, 2)};
  std::vector<at::Tensor> tlogits{before[0][0].narrow(0, 0, 3).squeeze(-1), before[0][1].narrow(0, 0, 2).squeeze(-1)};
  auto logits = g.logits.squeeze(-1);
  auto matches = distill::hungarian_match_batch(logits, g.boxes, tboxes);
  ASSERT_EQ(distill::num_matches(matches), 5);
  auto bl = distill::box_loss(g.boxes, tboxes, matches);
  auto ml = distill::mask_loss(g.masks, tmasks, matches);
  auto loss = bl.l1 + bl.giou + ml.mask + ml.dice + distill::class_kd_loss(logits, tlogits, before[3], matches) +
              distill::presence_kd_loss(g.presence, before[3]) +
              distill::clock_memory_loss(g.memory, before[4], tboxes);
  ASSERT_TRUE(std::isfinite(loss.item<double>()));
  loss.backward();

  // Every trunk parameter receives a gradient (the adapter head, the blocks, the patch embedding).
  int64_t with_grad = 0, total = 0;
  for (const auto& p : student->named_parameters()) {
    ++total;
    ASSERT_TRUE(p.value().grad().defined()) << p.key();
    with_grad += p.value().grad().abs().sum().item<double>() > 0;
  }
  EXPECT_GE(with_grad, total - 2);  // at most a couple of exactly-zero gradients (e.g. unused cls token paths)
  EXPECT_GT(student->named_parameters()["model.backbone.model.patch_embed.proj.weight"].grad().abs().sum().item<double>(), 0);

  // An optimizer step on the trunk changes the student, not the teacher's modules.
  distill::OptimConfig oc;
  distill::AdamW opt(distill::trainable_parameters(*student), oc);
  auto w0 = student->named_parameters()["model.backbone.model.patch_embed.proj.weight"].clone();
  opt.step(1e-3);
  EXPECT_FALSE(torch::equal(w0, student->named_parameters()["model.backbone.model.patch_embed.proj.weight"]));
  const auto after = teacher_path();
  for (size_t i = 0; i < before.size(); ++i) EXPECT_TRUE(torch::equal(before[i], after[i])) << "teacher output " << i;
}

// The same path on CUDA under bf16 autocast (what `instinct-train concept` runs on a GPU): the loss
// agrees with the CPU fp32 loss and gradients reach the trunk. Skipped without a CUDA device.
TEST(ConceptTraining, CudaBf16PathMatchesCpuAndReachesTrunk) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  auto run = [](c10::Device dev) {
    teacher::BundleLoadOptions opts;
    opts.modules = {"trunk", "detector_neck", "grounding", "concept_bank"};
    opts.device = dev;
    auto bundle = teacher::TeacherBundle::load(test::fixture_dir("teacher") + "/bundle", opts);
    const auto& info = bundle.info();
    model::VitConfig vc;
    vc.preset = "custom"; vc.img_size = info.image_size; vc.patch = 32; vc.width = 48; vc.depth = 2; vc.heads = 2;
    distill::resolve_student_shape(vc, info);
    torch::manual_seed(0);
    model::StudentTrunk student(vc);
    student->eval();  // BatchNorm on running statistics: the same function on both devices
    student->to(dev);
    torch::manual_seed(1);
    auto pixels = torch::randn({2, 3, info.image_size, info.image_size}).to(dev);
    auto [text, pad] = bundle.concepts(torch::tensor({0, 1}, torch::kLong).to(dev));
    compat::CudaAutocast ac(dev.is_cuda());
    at::Tensor tmem;
    {
      torch::NoGradGuard ng;
      auto [a, b, c] = bundle.detector_neck(bundle.trunk(pixels));
      tmem = bundle.grounding(a, b, c, text, pad).memory.to(torch::kFloat);
    }
    auto [s0, s1, s2] = bundle.detector_neck(student->forward(pixels));
    auto g = bundle.grounding(s0, s1, s2, text, pad);
    auto loss = (g.memory.to(torch::kFloat) - tmem).pow(2).mean();
    loss.backward();
    auto grad = student->named_parameters()["model.backbone.model.patch_embed.proj.weight"].grad();
    return std::pair<double, at::Tensor>{loss.item<double>(), grad.defined() ? grad.to(torch::kCPU, torch::kFloat) : grad};
  };
  const auto [cpu_loss, cpu_grad] = run(c10::Device(c10::kCPU));
  const auto [gpu_loss, gpu_grad] = run(c10::Device(c10::kCUDA));
  EXPECT_NEAR(gpu_loss, cpu_loss, 0.05 * std::abs(cpu_loss) + 1e-6);
  ASSERT_TRUE(gpu_grad.defined());
  EXPECT_TRUE(torch::isfinite(gpu_grad).all().item<bool>());
  EXPECT_GT(torch::cosine_similarity(gpu_grad.flatten(), cpu_grad.flatten(), 0).item<double>(), 0.9);
}
