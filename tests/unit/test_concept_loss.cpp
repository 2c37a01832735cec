#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <iostream>

#include "instinct/common/error.h"
#include "instinct/distill/concept_loss.h"
#include "instinct/io/archive.h"
#include "test_helpers.h"

using namespace instinct;
using namespace instinct::distill;

namespace {

c10::IValue fixture() {
  static c10::IValue fx = io::load_object(test::fixture_dir("concept_loss") + "/cases.pt");
  return fx;
}
c10::IValue get(const c10::IValue& d, const std::string& k) { return io::dict_get(d, k, "concept_loss/cases.pt"); }
at::Tensor tget(const c10::IValue& d, const std::string& k) { return get(d, k).toTensor().clone(); }
std::vector<at::Tensor> lget(const c10::IValue& d, const std::string& k, at::ScalarType dt = at::kFloat) {
  std::vector<at::Tensor> v;
  for (const auto& x : get(d, k).toListRef()) v.push_back(x.toTensor().to(dt).clone());
  return v;
}

// max |a - b| / max |b| (both as double on CPU).
double rel_dev(const at::Tensor& a, const at::Tensor& b) {
  auto x = a.detach().to(at::kCPU, at::kDouble), y = b.detach().to(at::kCPU, at::kDouble);
  EXPECT_EQ(x.sizes(), y.sizes());
  return (x - y).abs().max().item<double>() / std::max(y.abs().max().item<double>(), 1e-300);
}

// Reports the deviation (for the parity record) and checks it.
void expect_close(const char* what, const at::Tensor& got, const at::Tensor& want, double tol) {
  double d = rel_dev(got, want);
  std::cout << "[parity] " << what << " (" << c10::toString(got.scalar_type()) << "): rel dev " << d << "\n";
  EXPECT_LE(d, tol) << what;
}

std::vector<Match> fixture_matches() {
  std::vector<Match> m;
  for (const auto& x : get(get(fixture(), "match"), "pairs").toListRef()) {
    auto t = x.toTensor();
    Match mm;
    for (int64_t k = 0; k < t.size(0); ++k) mm.emplace_back(t[k][0].item<int64_t>(), t[k][1].item<int64_t>());
    m.push_back(mm);
  }
  return m;
}

double tol_for(at::ScalarType dt) { return dt == at::kDouble ? 1e-10 : 1e-5; }

class ConceptLossParity : public ::testing::TestWithParam<at::ScalarType> {};

}  // namespace

TEST(ConceptLoss, GiouMatchesTorchvision) {
  auto f = get(fixture(), "giou");
  auto a = tget(f, "a"), b = tget(f, "b");
  expect_close("giou pairwise", generalized_box_iou(a, b), tget(f, "pairwise"), 1e-5);
  expect_close("giou pairwise", generalized_box_iou(a.to(at::kDouble), b.to(at::kDouble)), tget(f, "pairwise"), 1e-12);
  expect_close("giou paired", generalized_box_iou_paired(a.narrow(0, 0, 5), b), tget(f, "paired"), 1e-5);
  auto c = torch::tensor({{0.5, 0.5, 0.2, 0.4}});
  EXPECT_TRUE(torch::allclose(box_cxcywh_to_xyxy(c), torch::tensor({{0.4, 0.3, 0.6, 0.7}})));
}

TEST(ConceptLoss, MatchingMatchesScipy) {
  auto b = get(fixture(), "batch");
  auto m = get(fixture(), "match");
  auto logits = tget(b, "s_logits"), boxes = tget(b, "s_boxes");
  auto tboxes = lget(b, "t_boxes");
  auto costs = lget(m, "costs", at::kDouble);
  auto want = fixture_matches();
  auto totals = get(m, "totals").toListRef();
  auto got = hungarian_match_batch(logits, boxes, tboxes);
  ASSERT_EQ(got.size(), want.size());
  double worst = 0;
  for (size_t p = 0; p < got.size(); ++p) {
    auto c = match_cost_matrix(logits[p], boxes[p], tboxes[p]);
    ASSERT_EQ(c.sizes(), costs[p].sizes());
    if (c.numel()) worst = std::max(worst, rel_dev(c, costs[p]));
    EXPECT_EQ(got[p], want[p]) << "pair " << p;  // continuous random costs: the optimum is unique
    EXPECT_EQ(hungarian_match(logits[p], boxes[p], tboxes[p]), got[p]);
    double total = 0;
    for (auto [q, t] : got[p]) total += c[q][t].item<double>();
    EXPECT_NEAR(total, totals[p].toDouble(), 1e-9 * std::max(1.0, std::abs(totals[p].toDouble())));
  }
  std::cout << "[parity] match cost matrix rel dev " << worst << "\n";
  EXPECT_LE(worst, 1e-6);  // inputs are fp32 in both; the cost is built in fp64 in both
  EXPECT_EQ(got[1].size(), 0u);   // T = 0
  EXPECT_EQ(got[3].size(), 10u);  // T = 12 > Q = 10: every query matched
}

TEST_P(ConceptLossParity, BoxLoss) {
  auto dt = GetParam();
  auto b = get(fixture(), "batch");
  auto f = get(fixture(), "box");
  auto sb = tget(b, "s_boxes").to(dt).requires_grad_(true);
  auto r = box_loss(sb, lget(b, "t_boxes"), fixture_matches());
  EXPECT_EQ(r.l1.dim(), 0);
  expect_close("box l1", r.l1, tget(f, "l1"), tol_for(dt));
  expect_close("box giou", r.giou, tget(f, "giou"), tol_for(dt));
  (r.l1 + 3 * r.giou).backward();
  expect_close("box grad", sb.grad(), tget(f, "grad_l1_plus_3giou"), 10 * tol_for(dt));
}

TEST_P(ConceptLossParity, MaskLoss) {
  auto dt = GetParam();
  auto b = get(fixture(), "batch");
  auto matches = fixture_matches();
  struct Case {
    const char* name;
    MaskLossKind kind;
    const char* teacher;
    bool points;
  };
  for (auto c : {Case{"mask_bce", MaskLossKind::bce, "t_masks", false},
                 Case{"mask_focal", MaskLossKind::focal, "t_masks", false},
                 Case{"mask_points", MaskLossKind::bce, "t_masks16", true}}) {
    auto f = get(fixture(), c.name);
    auto sm = tget(b, "s_masks").to(dt).requires_grad_(true);
    MaskLossConfig cfg;
    cfg.kind = c.kind;
    auto pts = c.points ? tget(f, "points").to(dt) : at::Tensor();
    auto r = mask_loss(sm, lget(b, c.teacher), matches, cfg, {}, pts);
    expect_close((std::string(c.name) + " mask").c_str(), r.mask, tget(f, "mask"), tol_for(dt));
    expect_close((std::string(c.name) + " dice").c_str(), r.dice, tget(f, "dice"), tol_for(dt));
    (r.mask + 0.5 * r.dice).backward();
    expect_close((std::string(c.name) + " grad").c_str(), sm.grad(), tget(f, "grad_mask_plus_half_dice"),
                 10 * tol_for(dt));
  }
}

TEST_P(ConceptLossParity, ClassAndPresenceKd) {
  auto dt = GetParam();
  auto b = get(fixture(), "batch");
  auto matches = fixture_matches();
  for (bool plain : {false, true}) {
    auto f = get(fixture(), plain ? "class_kd_plain" : "class_kd");
    auto sl = tget(b, "s_logits").to(dt).unsqueeze(-1).requires_grad_(true);  // (P,Q,1) as the module emits
    ClassKdConfig cfg;
    if (plain) {
      cfg.presence_gate = cfg.confidence_weight = false;
    } else {
      cfg.temperature = 2;
      cfg.w_unmatched = 0.5;
    }
    auto l = class_kd_loss(sl, lget(b, "t_logits"), plain ? at::Tensor() : tget(b, "t_presence"), matches, cfg);
    expect_close(plain ? "class_kd_plain" : "class_kd", l, tget(f, "loss"), tol_for(dt));
    l.backward();
    expect_close(plain ? "class_kd_plain grad" : "class_kd grad", sl.grad().squeeze(-1), tget(f, "grad"),
                 10 * tol_for(dt));
  }
  auto f = get(fixture(), "presence_kd");
  auto sp = tget(b, "s_presence").to(dt).unsqueeze(-1).requires_grad_(true);
  auto l = presence_kd_loss(sp, tget(b, "t_presence").unsqueeze(-1), 1.5);
  expect_close("presence_kd", l, tget(f, "loss"), tol_for(dt));
  l.backward();
  expect_close("presence_kd grad", sp.grad().squeeze(-1), tget(f, "grad"), 10 * tol_for(dt));
}

TEST_P(ConceptLossParity, ClockMemoryLoss) {
  auto dt = GetParam();
  auto f = get(fixture(), "clock");
  ClockConfig cfg;
  cfg.alpha = get(f, "alpha").toDouble();
  cfg.beta = get(f, "beta").toDouble();
  auto boxes = lget(f, "boxes");
  expect_close("clock weights", clock_weights(36, boxes, cfg, at::kCPU), tget(f, "weights"), 1e-6);
  auto sm = tget(f, "s_mem").to(dt).requires_grad_(true);
  auto l = clock_memory_loss(sm, tget(f, "t_mem"), boxes, cfg);
  expect_close("clock loss", l, tget(f, "loss"), dt == at::kDouble ? 1e-6 : 1e-5);  // weights are fp32
  l.backward();
  expect_close("clock grad", sm.grad(), tget(f, "grad"), dt == at::kDouble ? 1e-6 : 1e-5);
}

TEST_P(ConceptLossParity, RegionText) {
  auto dt = GetParam();
  auto f = get(fixture(), "region_text");
  auto pooled = pool_text_embeddings(tget(f, "text").to(dt), tget(f, "pad"));
  expect_close("pooled text", pooled, tget(f, "pooled"), tol_for(dt));
  auto qe = tget(f, "q_emb").to(dt).requires_grad_(true);
  auto l = region_text_loss(qe, fixture_matches(), tget(f, "pair_concept"), pooled);
  expect_close("region_text", l, tget(f, "loss"), tol_for(dt));
  l.backward();
  expect_close("region_text grad", qe.grad(), tget(f, "grad"), 10 * tol_for(dt));
}

INSTANTIATE_TEST_SUITE_P(Dtypes, ConceptLossParity, ::testing::Values(at::kFloat, at::kDouble),
                         [](const auto& info) { return std::string(c10::toString(info.param)); });

TEST(ConceptLoss, ClockWeightsHandComputed) {
  // 4x4 grid, centres at 0.125, 0.375, 0.625, 0.875. Box A covers x,y in [0, 0.75] (3x3 tokens:
  // rows/cols 0-2, area 9), box B covers x in [0.25, 0.75], y in [0.25, 0.5] (tokens 5 and 6,
  // area 2) and lies inside A: B's tokens take 1/2 (smallest box wins), A's other 7 take 1/9, the
  // 7 background tokens 1/7.
  auto a = torch::tensor({0.375, 0.375, 0.75, 0.75}), bb = torch::tensor({0.5, 0.375, 0.5, 0.25});
  ClockConfig cfg;
  cfg.alpha = 3;
  cfg.beta = 5;
  for (auto boxes : {at::stack({a, bb}), at::stack({bb, a})}) {
    auto w = clock_weights(16, {boxes, torch::zeros({0, 4})}, cfg, at::kCPU);
    ASSERT_EQ(w.sizes(), (at::IntArrayRef{16, 2}));
    for (int n = 0; n < 16; ++n) {
      int y = n / 4, x = n % 4;
      double want = (n == 5 || n == 6) ? 3.0 / 2 : (x < 3 && y < 3) ? 3.0 / 9 : 5.0 / 7;
      EXPECT_NEAR(w[n][0].item<double>(), want, 1e-6) << "token " << n;
      EXPECT_NEAR(w[n][1].item<double>(), 5.0 / 16, 1e-6) << "token " << n;  // no boxes: all background
    }
    // Memory difference of squared norm 2 per token: L = (2 * sum_n w[n,0] + 2 * sum_n w[n,1]) / 2.
    auto s = torch::zeros({16, 2, 2}), t = torch::ones({16, 2, 2});
    double want = (2 * (2 * 1.5 + 7 * 3.0 / 9 + 5.0) + 2 * 5.0) / 2;
    EXPECT_NEAR(clock_memory_loss(s, t, {boxes, torch::zeros({0, 4})}, cfg).item<double>(), want, 1e-5);
  }
  cfg.grid_h = 2;
  cfg.grid_w = 8;  // non-square grid accepted when given
  EXPECT_EQ(clock_weights(16, {a.unsqueeze(0)}, cfg, at::kCPU).size(0), 16);
  EXPECT_THROW(clock_weights(15, {a.unsqueeze(0)}, ClockConfig{}, at::kCPU), Error);
}

TEST(ConceptLoss, DiceHandComputed) {
  // p = (0.5, 0.75), g = (1, 0): 1 - (2 * 0.5 + 1) / (1.25 + 1 + 1) = 5/13.
  auto d = dice_loss(torch::tensor({{0.0, std::log(3.0)}}, torch::kDouble), torch::tensor({{1.0, 0.0}}, torch::kDouble));
  EXPECT_NEAR(d.item<double>(), 5.0 / 13, 1e-12);
  EXPECT_NEAR(dice_loss(torch::full({1, 4}, 30.0), torch::ones({1, 4})).item<double>(), 0, 1e-6);
}

TEST(ConceptLoss, PixelCentrePointsEqualFullResolution) {
  auto b = get(fixture(), "batch");
  auto matches = fixture_matches();
  auto sm = tget(b, "s_masks").to(at::kDouble);
  auto full = mask_loss(sm, lget(b, "t_masks"), matches);
  auto c = (torch::arange(12, torch::kDouble) + 0.5) / 12;
  auto grid = torch::stack({c.unsqueeze(0).expand({12, 12}), c.unsqueeze(1).expand({12, 12})}, -1).reshape({1, -1, 2});
  auto pts = grid.expand({num_matches(matches), 144, 2});
  auto sampled = mask_loss(sm, lget(b, "t_masks"), matches, {}, {}, pts);
  EXPECT_NEAR(sampled.mask.item<double>(), full.mask.item<double>(), 1e-10);
  EXPECT_NEAR(sampled.dice.item<double>(), full.dice.item<double>(), 1e-10);
}

TEST(ConceptLoss, SampledPointsFollowTheGenerator) {
  auto b = get(fixture(), "batch");
  auto matches = fixture_matches();
  auto sm = tget(b, "s_masks");
  MaskLossConfig cfg;
  cfg.num_points = 64;
  auto run = [&](uint64_t seed) {
    auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
    return mask_loss(sm, lget(b, "t_masks16"), matches, cfg, gen).mask.item<double>();
  };
  EXPECT_EQ(run(7), run(7));
  EXPECT_NE(run(7), run(8));
  EXPECT_TRUE(std::isfinite(mask_loss(sm, lget(b, "t_masks16"), matches, cfg).dice.item<double>()));
  EXPECT_THROW(mask_loss(sm, lget(b, "t_masks16"), matches), Error);  // sizes differ without points
}

TEST(ConceptLoss, NoTargetsGiveZeroBoxMaskAndNoObjectClassLoss) {
  const int64_t p = 2, q = 5;
  auto logits = torch::randn({p, q}).requires_grad_(true);
  auto boxes = torch::rand({p, q, 4}).requires_grad_(true);
  auto masks = torch::randn({p, q, 8, 8}).requires_grad_(true);
  std::vector<at::Tensor> none{torch::zeros({0, 4}), torch::zeros({0, 4})};
  auto matches = hungarian_match_batch(logits, boxes, none);
  ASSERT_EQ(matches.size(), 2u);
  EXPECT_EQ(num_matches(matches), 0);
  auto bl = box_loss(boxes, none, matches);
  auto ml = mask_loss(masks, {torch::zeros({0, 8, 8}), torch::zeros({0, 8, 8})}, matches);
  ClassKdConfig cfg;
  cfg.w_unmatched = 0.7;
  auto presence = torch::tensor({0.3f, -1.2f});
  auto cl = class_kd_loss(logits, {torch::zeros({0}), torch::zeros({0})}, presence, matches, cfg);
  // Every query pushed to 0: softplus(s) * w_unmatched * sigmoid(presence_p), mean over P*Q.
  auto want = (at::softplus(logits.detach()) * 0.7 * presence.sigmoid().unsqueeze(1)).mean();
  EXPECT_NEAR(cl.item<double>(), want.item<double>(), 1e-6);
  EXPECT_EQ(bl.l1.item<double>(), 0);
  EXPECT_EQ(bl.giou.item<double>(), 0);
  EXPECT_EQ(ml.mask.item<double>(), 0);
  EXPECT_EQ(ml.dice.item<double>(), 0);
  (bl.l1 + bl.giou + ml.mask + ml.dice + cl).backward();
  EXPECT_EQ(boxes.grad().abs().sum().item<double>(), 0);
  EXPECT_EQ(masks.grad().abs().sum().item<double>(), 0);
  EXPECT_TRUE(logits.grad().isfinite().all().item<bool>());
  EXPECT_GT(logits.grad().abs().sum().item<double>(), 0);
  EXPECT_EQ(gather_matched(torch::randn({p, q, 3}), matches).size(0), 0);
  EXPECT_EQ(region_text_loss(torch::randn({p, q, 3}), matches, torch::zeros({p}, torch::kLong), torch::randn({2, 3}))
                .item<double>(),
            0);
}

TEST(ConceptLoss, DegenerateBoxesStayFinite) {
  auto s = torch::tensor({{0.5f, 0.5f, 0.0f, 0.2f}, {0.5f, 0.5f, 0.0f, 0.0f}, {0.3f, 0.3f, 0.1f, 0.1f}})
               .requires_grad_(true);
  auto t = torch::tensor({{0.5f, 0.5f, 0.0f, 0.0f}, {0.5f, 0.5f, 0.0f, 0.2f}});
  auto logits = torch::zeros({3});
  auto c = match_cost_matrix(logits, s, t);
  EXPECT_TRUE(c.isfinite().all().item<bool>());
  EXPECT_TRUE(generalized_box_iou(box_cxcywh_to_xyxy(s), box_cxcywh_to_xyxy(t)).isfinite().all().item<bool>());
  auto m = hungarian_match(logits, s, t);
  EXPECT_EQ(m.size(), 2u);
  auto r = box_loss(s.unsqueeze(0), {t}, {m});
  EXPECT_TRUE(std::isfinite(r.l1.item<double>()) && std::isfinite(r.giou.item<double>()));
  (r.l1 + r.giou).backward();
  EXPECT_TRUE(s.grad().isfinite().all().item<bool>());
  // Identical zero-size boxes are one box (GIoU 1), not NaN.
  auto z = torch::tensor({{0.5, 0.5, 0.5, 0.5}}, torch::kDouble);
  EXPECT_NEAR(generalized_box_iou(z, z).item<double>(), 1, 1e-9);
}

TEST(ConceptLoss, NanStudentBoxGetsTheInvalidCost) {
  auto s = torch::rand({4, 4}) * 0.3 + 0.2;
  s[1][2] = NAN;
  auto logits = torch::randn({4});
  logits[3] = NAN;
  auto t = torch::rand({2, 4}) * 0.3 + 0.2;
  auto c = match_cost_matrix(logits, s, t);
  EXPECT_TRUE(c.isfinite().all().item<bool>());
  EXPECT_EQ(c[1][0].item<double>(), 1e8);
  EXPECT_EQ(c[3][1].item<double>(), 1e8);
  auto m = hungarian_match(logits, s, t);
  ASSERT_EQ(m.size(), 2u);
  EXPECT_EQ(m[0].first, 0);  // the two finite rows win
  EXPECT_EQ(m[1].first, 2);
}

TEST(ConceptLoss, EmptyBatch) {
  auto logits = torch::zeros({0, 5, 1}).requires_grad_(true);
  auto boxes = torch::zeros({0, 5, 4}).requires_grad_(true);
  auto matches = hungarian_match_batch(logits, boxes, {});
  EXPECT_TRUE(matches.empty());
  auto bl = box_loss(boxes, {}, matches);
  auto cl = class_kd_loss(logits, {}, torch::zeros({0}), matches);
  auto pl = presence_kd_loss(torch::zeros({0}), torch::zeros({0}));
  auto ml = clock_memory_loss(torch::zeros({16, 0, 4}), torch::zeros({16, 0, 4}), {});
  for (const auto& x : {bl.l1, bl.giou, cl, pl, ml}) {
    EXPECT_EQ(x.dim(), 0);
    EXPECT_EQ(x.item<double>(), 0);
  }
  (bl.l1 + cl).backward();
}

TEST(ConceptLoss, Bf16InputsComputeInFp32) {
  auto b = get(fixture(), "batch");
  auto matches = fixture_matches();
  auto sb = tget(b, "s_boxes"), sl = tget(b, "s_logits"), sm = tget(b, "s_masks");
  auto tb = lget(b, "t_boxes", at::kBFloat16), tl = lget(b, "t_logits", at::kBFloat16);
  auto ref_box = box_loss(sb.to(at::kBFloat16).to(at::kFloat), tb, matches);
  auto bf = box_loss(sb.to(at::kBFloat16).requires_grad_(true), tb, matches);
  EXPECT_EQ(bf.l1.scalar_type(), at::kFloat);
  EXPECT_NEAR(bf.l1.item<double>(), ref_box.l1.item<double>(), 1e-6);
  EXPECT_NEAR(bf.giou.item<double>(), ref_box.giou.item<double>(), 1e-6);
  auto cl = class_kd_loss(sl.to(at::kBFloat16), tl, tget(b, "t_presence").to(at::kBFloat16), matches);
  EXPECT_EQ(cl.scalar_type(), at::kFloat);
  auto cl32 = class_kd_loss(sl.to(at::kBFloat16).to(at::kFloat), tl, tget(b, "t_presence").to(at::kBFloat16), matches);
  EXPECT_NEAR(cl.item<double>(), cl32.item<double>(), 1e-6);
  auto ml = mask_loss(sm.to(at::kBFloat16), lget(b, "t_masks", at::kBFloat16), matches);
  EXPECT_EQ(ml.dice.scalar_type(), at::kFloat);
  EXPECT_EQ(hungarian_match_batch(sl.to(at::kBFloat16), sb.to(at::kBFloat16), tb).size(), matches.size());
}

TEST(ConceptLoss, BadArgumentsThrow) {
  auto boxes = torch::rand({2, 3, 4});
  std::vector<at::Tensor> t{torch::rand({1, 4}), torch::rand({1, 4})};
  EXPECT_THROW(box_loss(torch::rand({2, 3}), t, {{}, {}}), Error);
  EXPECT_THROW(box_loss(boxes, t, {{}}), Error);              // one match list for two pairs
  EXPECT_THROW(box_loss(boxes, t, {{{3, 0}}, {}}), Error);    // query out of range
  EXPECT_THROW(box_loss(boxes, t, {{{0, 1}}, {}}), Error);    // target out of range
  EXPECT_THROW(hungarian_match(torch::zeros({2}), torch::rand({3, 4}), t[0]), Error);
  EXPECT_THROW(match_cost_matrix(torch::zeros({3}), torch::rand({3, 5}), t[0]), Error);
  EXPECT_THROW(class_kd_loss(torch::zeros({2, 3}), {torch::zeros({1}), torch::zeros({1})}, {}, {{}, {}}), Error);
  EXPECT_THROW(info_nce_loss(torch::rand({2, 3}), torch::rand({2, 3}), torch::tensor({0, 2}), 0.07), Error);
  EXPECT_THROW(clock_memory_loss(torch::rand({16, 1, 2}), torch::rand({16, 1, 3}), {t[0]}), Error);
}

TEST(ConceptLoss, CudaMatchesCpu) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  auto b = get(fixture(), "batch");
  auto matches = fixture_matches();
  auto dev = at::Device(at::kCUDA);
  auto to = [&](std::vector<at::Tensor> v) {
    for (auto& x : v) x = x.to(dev);
    return v;
  };
  auto sb = tget(b, "s_boxes"), sl = tget(b, "s_logits"), sm = tget(b, "s_masks");
  EXPECT_EQ(hungarian_match_batch(sl.to(dev), sb.to(dev), to(lget(b, "t_boxes"))), matches);
  auto cpu_box = box_loss(sb, lget(b, "t_boxes"), matches);
  auto gpu_box = box_loss(sb.to(dev), to(lget(b, "t_boxes")), matches);
  EXPECT_NEAR(gpu_box.giou.item<double>(), cpu_box.giou.item<double>(), 1e-5);
  auto cpu_m = mask_loss(sm, lget(b, "t_masks"), matches);
  auto gpu_m = mask_loss(sm.to(dev), to(lget(b, "t_masks")), matches);
  EXPECT_NEAR(gpu_m.dice.item<double>(), cpu_m.dice.item<double>(), 1e-5);
  MaskLossConfig pc;
  pc.num_points = 32;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(3);
  EXPECT_TRUE(std::isfinite(mask_loss(sm.to(dev), to(lget(b, "t_masks16")), matches, pc, gen).mask.item<double>()));
  auto cpu_c = class_kd_loss(sl, lget(b, "t_logits"), tget(b, "t_presence"), matches);
  auto gpu_c = class_kd_loss(sl.to(dev), to(lget(b, "t_logits")), tget(b, "t_presence").to(dev), matches);
  EXPECT_NEAR(gpu_c.item<double>(), cpu_c.item<double>(), 1e-5);
  auto f = get(fixture(), "clock");
  auto boxes = lget(f, "boxes");
  auto cpu_k = clock_memory_loss(tget(f, "s_mem"), tget(f, "t_mem"), boxes);
  auto gpu_k = clock_memory_loss(tget(f, "s_mem").to(dev), tget(f, "t_mem").to(dev), to(boxes));
  EXPECT_LE(rel_dev(gpu_k, cpu_k), 1e-5);
  auto r = get(fixture(), "region_text");
  auto pooled = pool_text_embeddings(tget(r, "text").to(dev), tget(r, "pad").to(dev));
  auto gpu_r = region_text_loss(tget(r, "q_emb").to(dev), matches, tget(r, "pair_concept").to(dev), pooled);
  EXPECT_LE(rel_dev(gpu_r, tget(r, "loss")), 1e-5);
}
