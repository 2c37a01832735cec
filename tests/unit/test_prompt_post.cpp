// SAM3's box/point post-processing as instinct-eval applies it (instinct/eval/prompt_model.h): hole
// filling of 8-connected background components and the single-mask stability score. End-to-end
// parity with SAM3's own predictor is tests/cli/sam3_bundle.sh.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "eval/prompt_model.h"

using instinct::eval::fill_mask_holes;
using instinct::eval::mask_stability;

TEST(FillMaskHoles, FillsSmallBackgroundComponentsOnly) {
  // Foreground everywhere (logit 5) but three background regions (logit -3):
  //  a 3x3 hole (9 px), a 4x5 hole (20 px) and a 1-px hole touching the first only diagonally.
  auto m = torch::full({1, 12, 12}, 5.0f);
  m[0].narrow(0, 1, 3).narrow(1, 1, 3).fill_(-3.0f);   // rows 1-3, cols 1-3
  m[0][4][4] = -3.0f;                                   // diagonal neighbour of (3,3): same component
  m[0].narrow(0, 6, 4).narrow(1, 5, 5).fill_(-3.0f);   // rows 6-9, cols 5-9: 20 px
  auto a = m.clone();
  fill_mask_holes(a, 0.0f, 10);                         // components of 10 and 20 px: only the first filled
  EXPECT_FLOAT_EQ(a[0][2][2].item<float>(), 10.0f);     // threshold + 10
  EXPECT_FLOAT_EQ(a[0][4][4].item<float>(), 10.0f);
  EXPECT_FLOAT_EQ(a[0][7][7].item<float>(), -3.0f);
  EXPECT_FLOAT_EQ(a[0][0][0].item<float>(), 5.0f);      // foreground untouched
  auto b = m.clone();
  fill_mask_holes(b, 0.0f, 9);                          // 10-px component (8-connected) is now too big
  EXPECT_FLOAT_EQ(b[0][2][2].item<float>(), -3.0f);
  auto c = m.clone();
  fill_mask_holes(c, 0.0f, 20);
  EXPECT_EQ((c > 0).all().item<bool>(), true);
  auto d = m.clone();
  fill_mask_holes(d, 0.0f, 0);                          // 0 = off
  EXPECT_TRUE(torch::equal(d, m));
}

TEST(FillMaskHoles, ThresholdAndBorderComponents) {
  // A background band along the border is a component like any other (SAM3 does not special-case
  // the border); the threshold decides what is background (logit <= threshold).
  auto m = torch::full({2, 6, 6}, 1.0f);
  m[0][0].fill_(-1.0f);                                 // 6-px border row
  m[1][3][3] = 0.5f;                                    // background only for threshold 0.5
  fill_mask_holes(m, 0.5f, 6);
  EXPECT_FLOAT_EQ(m[0][0][0].item<float>(), 10.5f);
  EXPECT_FLOAT_EQ(m[1][3][3].item<float>(), 10.5f);
  EXPECT_FLOAT_EQ(m[1][0][0].item<float>(), 1.0f);
}

TEST(MaskStability, RatioOfAreasAboveAndBelowDelta) {
  auto m = torch::zeros({3, 4, 4});
  m[0].fill_(1.0f);                                     // all confidently in: 16/16
  m[1].narrow(0, 0, 2).fill_(1.0f);                     // 8 px > +delta, 8 px at 0 (> -delta): 8/16
  m[1].narrow(0, 2, 2).fill_(0.0f);
  m[2].fill_(-1.0f);                                    // empty union -> 1
  auto s = mask_stability(m, 0.05);
  EXPECT_FLOAT_EQ(s[0].item<float>(), 1.0f);
  EXPECT_FLOAT_EQ(s[1].item<float>(), 0.5f);
  EXPECT_FLOAT_EQ(s[2].item<float>(), 1.0f);
}
