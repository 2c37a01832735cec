// Parity with SAM3's own code (issue 13): our matcher, losses, cgF1 and concept post-processing on
// the inputs of tests/python/fixtures_sam3_ref.py, against what SAM3's functions computed on them
// (sam3/train/matcher.py, sam3/train/loss/, sam3/eval/cgf1_eval.py, sam3/eval/postprocessors.py,
// sam3/model/sam3_image_processor.py). Skipped with the reason when $SAM3_SRC (or, for cgF1,
// $INSTINCT_COCOAPI_SRC) was absent when the fixtures were made.
//
// Where our definition deliberately differs, the test names the difference and checks the shared
// part:
//  - GIoU of degenerate boxes: ours widens a zero side to kMinBoxSide = 1e-6 (finite values and
//    gradients when both boxes are degenerate, where SAM3's is 0/0 = NaN and scipy rejects the cost
//    matrix); with one degenerate box per pair the two differ by O(1e-6 / box area);
//  - loss normaliser: ours divides by the number of matches K unless `num_boxes` is given, SAM3 by
//    the number of targets (>= 1, averaged over ranks). Distillation targets are a subset of the
//    teacher's Q queries, so T <= Q and K = T; here SAM3's value is passed as num_boxes;
//  - targets: ours are the teacher's soft probabilities sigmoid(teacher logits), SAM3's binary ground
//    truth; with hard (0/1) targets and with soft ones fed to SAM3's own functions they agree;
//  - mask sizes: SAM3 upsamples predicted masks to the target size inside Masks, ours needs equal
//    sizes (or point sampling); the test upsamples as SAM3 does before calling ours;
//  - the mask loss kind: SAM3 trains with focal + dice; ours defaults to BCE + dice (mask_kind),
//    focal is compared here;
//  - point sampling: SAM3 (PointRend's point_sample) pads with zeros, ours with the border value, so
//    the two agree except within half a pixel of the map's edge;
//  - class loss: SAM3's IABCEMdetr (target prob^alpha IoU^(1-alpha), pos_weight, prob^gamma on
//    negatives) vs our teacher-probability KD: they coincide at alpha = 1, pos_weight = 1, gamma = 0
//    without padding, our confidence weighting off and a hard presence gate, which is compared;
//  - presence loss: SAM3's is sigmoid_focal_loss with alpha 0.5, gamma 0 = 0.5 x BCE; ours is the
//    plain BCE (soft targets), so ours = 2 x SAM3's with hard targets;
//  - concept keep threshold: Sam3Processor keeps score > 0.5, SAM3's cgF1 evaluator score >= 0.5;
//    instinct-eval uses >= for both its concept IoU and cgF1, so a score of exactly 0.5 is kept.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>

#include "instinct/distill/concept_loss.h"
#include "instinct/eval/cgf1.h"
#include "instinct/eval/coco.h"
#include "eval/postprocess.h"
#include "instinct/io/archive.h"
#include "test_helpers.h"

using namespace instinct;
using namespace instinct::distill;

namespace {

c10::IValue get(const c10::IValue& d, const std::string& k) { return io::dict_get(d, k, "sam3_ref"); }
at::Tensor tget(const c10::IValue& d, const std::string& k) { return get(d, k).toTensor().clone(); }
std::vector<at::Tensor> lget(const c10::IValue& d, const std::string& k) {
  std::vector<at::Tensor> v;
  for (const auto& x : get(d, k).toListRef()) v.push_back(x.toTensor().clone());
  return v;
}
std::vector<Match> matches_of(const c10::IValue& d, const std::string& k = "matches") {
  std::vector<Match> out;
  for (const auto& t : lget(d, k)) {
    Match m;
    for (int64_t i = 0; i < t.size(0); ++i) m.emplace_back(t[i][0].item<int64_t>(), t[i][1].item<int64_t>());
    out.push_back(m);
  }
  return out;
}

double max_abs(const at::Tensor& a, const at::Tensor& b) {
  EXPECT_EQ(a.sizes(), b.sizes());
  if (a.numel() == 0) return 0;
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

// Reports the deviation for the parity record and checks it.
void expect_close(const std::string& what, const at::Tensor& got, const at::Tensor& want, double tol) {
  const double d = max_abs(got, want);
  std::cout << "[sam3 parity] " << what << ": max |ours - SAM3| = " << d << "\n";
  EXPECT_LE(d, tol) << what;
}
void expect_close(const std::string& what, double got, double want, double tol) {
  expect_close(what, torch::tensor({got}, at::kDouble), torch::tensor({want}, at::kDouble), tol);
}

c10::IValue losses(std::string& dir) {
  return io::load_object(dir + "/losses.pt");
}

}  // namespace

// ------------------------------------------------------------------------------------------------
// Matching: SAM3's BinaryHungarianMatcherV2 (focal, 2 x class + 5 x L1 + 2 x -GIoU) as configured in
// SAM3's image training configs.

TEST(Sam3Parity, MatcherCostAndAssignment) {
  std::string dir;
  INSTINCT_REFERENCE_FIXTURE_OR_SKIP(dir, "sam3_ref");
  auto fx = losses(dir);
  std::cout << "[sam3 parity] SAM3 matcher config: " << get(fx, "matcher_config").toStringRef() << "\n";
  for (const auto& c : get(fx, "match").toListRef()) {
    const auto name = get(c, "name").toStringRef();
    const bool degenerate = name.rfind("degenerate", 0) == 0;
    auto logits = tget(c, "logits"), boxes = tget(c, "boxes");
    auto tboxes = lget(c, "t_boxes"), costs = lget(c, "costs");
    auto want = matches_of(c);
    // Degenerate boxes: our GIoU widens zero sides to 1e-6 (see the top of the file).
    const double tol = degenerate ? 1e-5 : 1e-12;
    double worst = 0;
    for (size_t b = 0; b < tboxes.size(); ++b) {
      auto ours = match_cost_matrix(logits[int64_t(b)], boxes[int64_t(b)], tboxes[b]);
      ASSERT_EQ(ours.sizes(), costs[b].sizes()) << name << " entry " << b;
      worst = std::max(worst, max_abs(ours, costs[b]) / std::max(1.0, costs[b].numel() ? costs[b].abs().max().item<double>() : 0.0));
    }
    std::cout << "[sam3 parity] matcher cost " << name << ": max |ours - SAM3| / max(1, |C|) = " << worst << "\n";
    EXPECT_LE(worst, tol) << name;
    auto got = hungarian_match_batch(logits, boxes, tboxes);
    ASSERT_EQ(got.size(), want.size());
    for (size_t b = 0; b < got.size(); ++b) EXPECT_EQ(got[b], want[b]) << name << " entry " << b;
  }
}

// ------------------------------------------------------------------------------------------------
// Losses: sam3/train/loss/loss_fns.py

TEST(Sam3Parity, BoxLossL1AndGiou) {
  std::string dir;
  INSTINCT_REFERENCE_FIXTURE_OR_SKIP(dir, "sam3_ref");
  auto fx = losses(dir);
  for (const auto& c : get(fx, "match").toListRef()) {
    const auto name = get(c, "name").toStringRef();
    const double tol = name.rfind("degenerate", 0) == 0 ? 1e-5 : 1e-12;
    auto boxes = tget(c, "boxes");
    auto tboxes = lget(c, "t_boxes");
    auto m = matches_of(c);
    // SAM3's normaliser (number of targets, >= 1) passed as num_boxes.
    auto bl = box_loss(boxes, tboxes, m, get(c, "num_boxes").toDouble());
    expect_close("loss_bbox " + name, bl.l1, tget(c, "loss_bbox"), 1e-12);
    expect_close("loss_giou " + name, bl.giou, tget(c, "loss_giou"), tol);
    int64_t targets = 0;
    for (const auto& t : tboxes) targets += t.size(0);
    if (num_matches(m) == targets && targets > 0) {  // T <= Q: our default normaliser K is SAM3's
      auto d = box_loss(boxes, tboxes, m);
      expect_close("loss_bbox (K) " + name, d.l1, tget(c, "loss_bbox"), 1e-12);
    }
  }
}

TEST(Sam3Parity, MaskFocalAndDiceLoss) {
  std::string dir;
  INSTINCT_REFERENCE_FIXTURE_OR_SKIP(dir, "sam3_ref");
  auto fx = losses(dir);
  MaskLossConfig cfg;
  cfg.kind = MaskLossKind::focal;  // SAM3's Masks: focal (alpha 0.25, gamma 2) + dice
  for (const auto& c : get(fx, "masks").toListRef()) {
    const auto name = get(c, "name").toStringRef();
    auto s = tget(c, "s_masks");
    auto t_logits = lget(c, "t_logits");
    auto m = matches_of(c);
    const double nb = get(c, "num_boxes").toDouble();
    const int64_t ht = t_logits[0].size(-1);
    if (s.size(-1) != ht) {  // SAM3 upsamples the predictions to the target size inside Masks
      namespace F = torch::nn::functional;
      s = F::interpolate(s, F::InterpolateFuncOptions().size(std::vector<int64_t>{ht, ht}).mode(torch::kBilinear).align_corners(false));
    }
    // Hard targets: teacher logits +-inf give sigmoid = exactly 1 / 0.
    std::vector<at::Tensor> hard;
    for (const auto& t : t_logits) hard.push_back(at::where(t > 0, INFINITY, -INFINITY).to(at::kDouble));
    auto h = mask_loss(s, hard, m, cfg, {}, {}, nb);
    expect_close("loss_mask hard " + name, h.mask, tget(c, "loss_mask_hard"), 1e-12);
    expect_close("loss_dice hard " + name, h.dice, tget(c, "loss_dice_hard"), 1e-12);
    // Soft targets: our teacher probabilities through SAM3's own focal / dice functions.
    auto sl = mask_loss(s, t_logits, m, cfg, {}, {}, nb);
    expect_close("loss_mask soft " + name, sl.mask, tget(c, "loss_mask_soft"), 1e-12);
    expect_close("loss_dice soft " + name, sl.dice, tget(c, "loss_dice_soft"), 1e-12);
  }
  auto d = get(fx, "dice");
  auto l = tget(d, "logits"), g = tget(d, "targets");
  expect_close("dice per mask (soft)", dice_loss(l, g), tget(d, "per_mask"), 1e-12);
  expect_close("dice per mask (hard)", dice_loss(l, (g > 0.5).to(at::kDouble)), tget(d, "per_mask_hard"), 1e-12);
}

TEST(Sam3Parity, PointSampleAgreesAwayFromTheBorder) {
  std::string dir;
  INSTINCT_REFERENCE_FIXTURE_OR_SKIP(dir, "sam3_ref");
  auto p = get(losses(dir), "point");
  auto maps = tget(p, "maps"), pts = tget(p, "points"), want = tget(p, "sam3");
  auto got = point_sample(maps, pts);
  const double h = double(maps.size(1)), w = double(maps.size(2));
  // Interior: within the pixel centres' hull, where zero and border padding agree.
  auto x = pts.select(2, 0), y = pts.select(2, 1);
  auto inner = (x >= 0.5 / w) & (x <= 1 - 0.5 / w) & (y >= 0.5 / h) & (y <= 1 - 0.5 / h);
  ASSERT_GT(inner.sum().item<int64_t>(), 50);
  expect_close("point_sample interior", got.masked_select(inner), want.masked_select(inner), 1e-12);
  // Near the edge SAM3 blends in zeros (PointRend's grid_sample default), ours the border value.
  auto outer = ~inner;
  ASSERT_GT(outer.sum().item<int64_t>(), 0);
  EXPECT_GT(max_abs(got.masked_select(outer), want.masked_select(outer)), 1e-3);
}

TEST(Sam3Parity, ClassLossSharedCaseAndPresenceLoss) {
  std::string dir;
  INSTINCT_REFERENCE_FIXTURE_OR_SKIP(dir, "sam3_ref");
  auto c = get(losses(dir), "class");
  auto logits = tget(c, "logits").to(at::kDouble), presence = tget(c, "presence").to(at::kDouble);
  auto present = tget(c, "present");
  auto m = matches_of(c);
  // IABCEMdetr at alpha = 1 uses the matched query's own probability as its target: our teacher
  // logits for the matched targets are the student's logits of the queries matched to them.
  std::vector<at::Tensor> tl;
  for (size_t p = 0; p < m.size(); ++p) {
    auto t = torch::zeros({int64_t(m[p].size())}, at::kDouble);
    for (const auto& [q, k] : m[p]) t[k] = logits[int64_t(p)][q];
    tl.push_back(t);
  }
  auto hard_presence = at::where(present > 0, INFINITY, -INFINITY).to(at::kDouble);
  ClassKdConfig cfg;
  cfg.confidence_weight = false;
  cfg.w_unmatched = 1;
  cfg.temperature = 1;
  auto ours = class_kd_loss(logits, tl, hard_presence, m, cfg);
  expect_close("class loss (IABCEMdetr alpha=1, pos_weight=1, gamma=0)", ours, tget(c, "loss_ce"), 1e-6);  // SAM3 in fp32
  auto pres = presence_kd_loss(presence, hard_presence);
  expect_close("presence loss (ours = 2 x SAM3's alpha-0.5 focal)", pres, 2 * tget(c, "presence_loss"), 1e-6);
}

// ------------------------------------------------------------------------------------------------
// Concept post-processing: Sam3Processor._forward_grounding and PostProcessImage

TEST(Sam3Parity, ConceptPostProcessing) {
  std::string dir;
  INSTINCT_REFERENCE_FIXTURE_OR_SKIP(dir, "sam3_ref");
  auto fx = io::load_object(dir + "/post.pt");
  int on_at_tiny_logits = 0, exactly_half = 0;
  for (const auto& c : get(fx, "cases").toListRef()) {
    const auto name = get(c, "name").toStringRef();
    const int h = int(get(c, "h").toInt()), w = int(get(c, "w").toInt());
    auto logits = tget(c, "logits"), boxes = tget(c, "boxes"), masks = tget(c, "masks");
    auto presence = tget(c, "presence");
    const eval::InputGeometry g{h, w, 1008, 1008, 1008, false};  // SAM3: squash resize to 1008
    // Scores: every query (PostProcessImage keeps all with detection_threshold <= 0).
    auto score = eval::concept_scores(logits.unsqueeze(0), presence.reshape({1})).squeeze(0);
    expect_close("scores " + name, score, tget(c, "eval_scores"), 0.0);
    // Kept set: ours score >= 0.5, Sam3Processor score > 0.5; they differ only at exactly 0.5.
    auto kept_sam3 = tget(c, "processor_kept");
    std::vector<int64_t> ours_kept;
    for (int64_t q = 0; q < score.size(0); ++q)
      if (score[q].item<double>() >= 0.5) ours_kept.push_back(q);
    std::vector<int64_t> sam3_kept(kept_sam3.data_ptr<int64_t>(), kept_sam3.data_ptr<int64_t>() + kept_sam3.numel());
    std::vector<int64_t> ours_strict;
    for (int64_t q : ours_kept)
      if (score[q].item<double>() != 0.5) ours_strict.push_back(q);
      else ++exactly_half;
    EXPECT_EQ(ours_strict, sam3_kept) << name;
    expect_close("processor scores " + name, score.index_select(0, kept_sam3), tget(c, "processor_scores"), 0.0);
    // Masks and boxes of every query (PostProcessImage) and of the kept ones (Sam3Processor).
    auto eval_masks = tget(c, "eval_masks"), eval_boxes = tget(c, "eval_boxes");
    auto proc_masks = tget(c, "processor_masks"), proc_boxes = tget(c, "processor_boxes");
    for (int64_t q = 0; q < score.size(0); ++q) {
      auto rle = eval::mask_logits_to_rle(masks[q], g, eval::MaskRule::sigmoid_half);
      auto ours = torch::from_blob(eval::rle_decode(rle).data(), {h, w}, at::kByte).clone();
      EXPECT_TRUE(torch::equal(ours, eval_masks[q])) << name << " query " << q << ": "
          << (ours != eval_masks[q]).sum().item<int64_t>() << " pixels differ";
      auto pos = eval::rle_decode(eval::mask_logits_to_rle(masks[q], g, eval::MaskRule::logit_positive));
      on_at_tiny_logits += !torch::equal(torch::from_blob(pos.data(), {h, w}, at::kByte).clone(), eval_masks[q]);
      auto b = boxes[q];
      auto xy = eval::box_to_original_xyxy({b[0].item<double>(), b[1].item<double>(), b[2].item<double>(), b[3].item<double>()}, g);
      expect_close("box " + name + " q" + std::to_string(q), torch::tensor({xy[0], xy[1], xy[2], xy[3]}, at::kDouble),
                   eval_boxes[q], 1e-6 * std::max(h, w));  // SAM3 in fp32
    }
    for (int64_t k = 0; k < kept_sam3.numel(); ++k) {
      const int64_t q = kept_sam3[k].item<int64_t>();
      EXPECT_TRUE(torch::equal(eval_masks[q], proc_masks[k])) << name;
      EXPECT_LE(max_abs(eval_boxes[q], proc_boxes[k]), 1e-6 * std::max(h, w)) << name;
    }
  }
  // The fixture plants a query scored exactly 0.5 and masks of logits +-1e-8 and 0: SAM3's
  // sigmoid > 0.5 (fp32) turns +1e-8 off, a plain logit > 0 would turn it on.
  EXPECT_GE(exactly_half, 1);
  EXPECT_GE(on_at_tiny_logits, 1);
}

// ------------------------------------------------------------------------------------------------
// cgF1: SAM3's CGF1Evaluator on COCO-style ground truth (one image per (image, phrase) pair)

TEST(Sam3Parity, Cgf1MatchesSam3Evaluator) {
  std::string dir;
  INSTINCT_REFERENCE_FIXTURE_OR_SKIP(dir, "sam3_ref/cgf1");
  using json = nlohmann::json;
  auto read = [](const std::string& p) {
    std::ifstream f(p);
    EXPECT_TRUE(f.good()) << p;
    return json::parse(f);
  };
  const auto index = read(dir + "/index.json");
  ASSERT_GE(index.size(), 3u);
  for (const auto& name_j : index) {
    const std::string name = name_j.get<std::string>();
    const auto ds = eval::CocoDataset::load(dir + "/" + name + "_gt.json");
    const auto rows = read(dir + "/" + name + "_pred.json");
    const auto sam3 = read(dir + "/" + name + "_sam3.json");
    std::map<int64_t, const eval::CocoImageRecord*> img_of;
    for (const auto& im : ds.images()) img_of[im.id] = &im;
    std::vector<eval::CgF1Pair> pairs;
    for (const auto& sp : sam3["pairs"]) {
      const int64_t id = sp["image_id"].get<int64_t>();
      const int cat = sp["category_id"].get<int>();
      const auto& img = *img_of.at(id);
      // As instinct-eval: non-crowd instances of the phrase; detections with score >= 0.5.
      auto gt = eval::cgf1_ground_truth(ds, img, cat);
      std::vector<eval::Rle> dt;
      for (const auto& r : rows)
        if (r["image_id"].get<int64_t>() == id && r["score"].get<double>() >= 0.5)
          dt.push_back(eval::segmentation_to_rle(r["segmentation"], img.height, img.width));
      auto p = eval::match_pair(gt, dt);
      p.image_id = id;
      p.category_id = cat;
      EXPECT_EQ(p.gt, sp["gt"].get<int>()) << name << " pair " << id;
      EXPECT_EQ(p.dt, sp["dt"].get<int>()) << name << " pair " << id;
      const auto want = sp["ious"].get<std::vector<double>>();
      ASSERT_EQ(p.ious.size(), want.size()) << name << " pair " << id;
      for (size_t k = 0; k < want.size(); ++k) EXPECT_NEAR(p.ious[k], want[k], 1e-12) << name << " pair " << id;
      pairs.push_back(p);
    }
    const auto r = eval::cgf1(pairs);
    const auto& s = sam3["summary"];
    const auto& acc = sam3["accumulated"];
    expect_close("cgF1 " + name, r.cgf1, s["cgF1_eval_segm_cgF1"].get<double>(), 1e-12);
    expect_close("IL_MCC " + name, r.il_mcc, s["cgF1_eval_segm_IL_MCC"].get<double>(), 1e-12);
    const auto pmf1 = acc["positive_micro_F1"].get<std::vector<double>>();
    ASSERT_EQ(pmf1.size(), 10u);
    for (size_t k = 0; k < 10; ++k) expect_close("pmF1@" + std::to_string(k) + " " + name, r.pmf1_t[k], pmf1[k], 1e-12);
    expect_close("positive_micro_F1 " + name, r.pmf1, s["cgF1_eval_segm_positive_micro_F1"].get<double>(), 1e-12);
  }
}
