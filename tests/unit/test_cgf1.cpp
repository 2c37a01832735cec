// cgF1 (SAM3's concept metric) and its phrase selection, against hand-computed values.
#include <gtest/gtest.h>

#include <fstream>

#include "instinct/eval/cgf1.h"
#include "test_helpers.h"

using namespace instinct;
using namespace instinct::eval;

namespace {
Rle row_mask(const std::string& row) {  // a 1 x W mask from "##..##"
  std::vector<uint8_t> m(row.size());
  for (size_t x = 0; x < row.size(); ++x) m[x] = row[x] == '#';
  return rle_encode(m.data(), 1, int(row.size()));
}

CgF1Pair pair(int gt, int dt, std::vector<double> ious) {
  CgF1Pair p;
  p.gt = gt;
  p.dt = dt;
  p.ious = std::move(ious);
  return p;
}
}  // namespace

TEST(CgF1, HandComputedExample) {
  // Image level: TP = {A, E}, FN = {B}, FP = {C}, TN = {D} -> MCC = (2*1 - 1*1) / sqrt(3*3*2*2) = 1/6.
  // Positive pairs A (ious 0.9, 0.6), B (missed), E (0.75), F1 = 2PR/(P+R) ~ 2TP/(2TP+FP+FN):
  //   t in {0.50, 0.55, 0.60}: TP 3, FP 0, FN 1 -> 6/7   (0.6 >= 0.60 counts although 0.5 + 2*0.05 > 0.6 in binary)
  //   t in {0.65, 0.70, 0.75}: TP 2, FP 1, FN 2 -> 4/7
  //   t in {0.80, 0.85, 0.90}: TP 1, FP 2, FN 3 -> 2/7
  //   t = 0.95: TP 0 -> 0
  // Exact values carry SAM3's division guards (P = TP/(TP+FP+1e-4), ..., MCC denominator + 1e-6):
  // the fractions above within 1e-4, the computed values below to 1e-12.
  const auto r = cgf1({pair(2, 2, {0.9, 0.6}), pair(1, 0, {}), pair(0, 1, {}), pair(0, 0, {}), pair(1, 1, {0.75})});
  EXPECT_EQ(r.il_tp, 2);
  EXPECT_EQ(r.il_fn, 1);
  EXPECT_EQ(r.il_fp, 1);
  EXPECT_EQ(r.il_tn, 1);
  EXPECT_EQ(r.positive_pairs, 3);
  EXPECT_NEAR(r.il_mcc, 1.0 / 6.0, 1e-6);
  EXPECT_NEAR(r.il_mcc, 0.16666663888889352, 1e-12);
  EXPECT_NEAR(r.pmf1_t[0], 6.0 / 7.0, 1e-4);
  EXPECT_NEAR(r.pmf1_t[0], 0.8570693911952444, 1e-12);
  EXPECT_NEAR(r.pmf1_t[2], 0.8570693911952444, 1e-12);
  EXPECT_NEAR(r.pmf1_t[5], 0.5713632699122958, 1e-12);
  EXPECT_NEAR(r.pmf1_t[8], 0.28565715142738796, 1e-12);
  EXPECT_EQ(r.pmf1_t[9], 0.0);
  EXPECT_NEAR(r.pmf1, 36.0 / 70.0, 1e-4);
  EXPECT_NEAR(r.pmf1, 0.5142269437604783, 1e-12);
  EXPECT_NEAR(r.cgf1, 0.085704476342667, 1e-12);
}

TEST(CgF1, DegenerateCountsGiveZeroNotNan) {
  EXPECT_EQ(cgf1({}).cgf1, 0.0);
  // Every pair positive and detected: no negatives, MCC undefined -> 0.
  const auto r = cgf1({pair(1, 1, {1.0})});
  EXPECT_EQ(r.il_mcc, 0.0);
  EXPECT_NEAR(r.pmf1, 0.9998500124991251, 1e-12);  // 1 with SAM3's 1e-4 guards
  EXPECT_EQ(r.cgf1, 0.0);
}

TEST(CgF1, MatchingMaximisesTotalIouNotGreedy) {
  // gt0 = cols 0-3, gt1 = cols 4-7; dt0 = cols 2-5 (IoU 1/3 with both), dt1 = cols 0-3 (IoU 1 with gt0).
  // Greedy in dt order would give dt0->gt0 and dt1->gt1 (1/3 + 0); the optimum is dt1->gt0, dt0->gt1.
  const auto p = match_pair({row_mask("####...."), row_mask("....####")}, {row_mask("..####.."), row_mask("####....")});
  EXPECT_EQ(p.gt, 2);
  EXPECT_EQ(p.dt, 2);
  ASSERT_EQ(p.ious.size(), 2u);
  EXPECT_DOUBLE_EQ(p.ious[0], 1.0);
  EXPECT_DOUBLE_EQ(p.ious[1], 2.0 / 6.0);
  EXPECT_TRUE(match_pair({row_mask("##..")}, {}).ious.empty());
  EXPECT_EQ(match_pair({}, {row_mask("##..")}).dt, 1);
}

TEST(CgF1, PhrasesArePresentCategoriesPlusDeterministicAbsentOnes) {
  const auto dir = test::temp_dir("cgf1_cats");
  std::ofstream(dir + "/a.json") << R"({
   "images": [{"id": 4, "file_name": "a.jpg", "width": 4, "height": 4}, {"id": 5, "file_name": "b.jpg", "width": 4, "height": 4}],
   "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 3, "name": "c"}, {"id": 4, "name": "d"},
                  {"id": 5, "name": "e"}, {"id": 6, "name": "f"}],
   "annotations": [
    {"id": 1, "image_id": 4, "category_id": 1, "bbox": [0,0,2,2], "area": 4, "iscrowd": 0, "segmentation": [[0,0,2,0,2,2,0,2]]},
    {"id": 2, "image_id": 4, "category_id": 1, "bbox": [2,2,2,2], "area": 4, "iscrowd": 0, "segmentation": [[2,2,4,2,4,4,2,4]]},
    {"id": 3, "image_id": 4, "category_id": 2, "bbox": [0,0,4,4], "area": 16, "iscrowd": 1, "segmentation": {"size": [4,4], "counts": [0,16]}}
   ]})";
  const auto ds = CocoDataset::load(dir + "/a.json");
  const auto& img = ds.images()[0];
  const std::vector<int> all{1, 2, 3, 4, 5, 6};
  const auto none = cgf1_categories(ds, img, all, 0, 0);
  EXPECT_EQ(none, std::vector<int>{1});  // crowd-only category 2 is neither present nor absent
  const auto every = cgf1_categories(ds, img, all, 100, 0);
  EXPECT_EQ(every, (std::vector<int>{1, 3, 4, 5, 6}));
  const auto two = cgf1_categories(ds, img, all, 2, 7);
  ASSERT_EQ(two.size(), 3u);
  EXPECT_EQ(two[0], 1);
  for (int c : two) EXPECT_NE(c, 2);
  EXPECT_EQ(two, cgf1_categories(ds, img, all, 2, 7));  // same seed and image -> same draw
  // Different seeds draw different absent sets for at least one seed (4 choose 2 = 6 possible sets).
  bool differs = false;
  for (uint64_t s = 0; s < 20 && !differs; ++s) differs = cgf1_categories(ds, img, all, 2, s) != two;
  EXPECT_TRUE(differs);
  // Candidates restrict the absent draw (e.g. the concept bank's categories).
  EXPECT_EQ(cgf1_categories(ds, img, {1, 4}, 5, 0), (std::vector<int>{1, 4}));
  EXPECT_EQ(cgf1_ground_truth(ds, img, 1).size(), 2u);
  EXPECT_TRUE(cgf1_ground_truth(ds, img, 2).empty());
}
