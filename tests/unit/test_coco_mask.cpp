// COCO RLE masks (src/eval/coco_mask.cpp): hand-derived vectors, round trips, error messages, and
// parity, through the same checks, with two fixture files of one schema: coco/ (the independent numpy
// reference scripts/coco_rle.py, via fixtures_coco.py: 111 edge cases) and pycocotools/ (the real
// pycocotools built from $INSTINCT_COCOAPI_SRC, via fixtures_pycocotools.py: those edge cases plus
// thousands of seeded random ones; skipped with the reason when the source is absent).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <random>

#include <nlohmann/json.hpp>

#include "instinct/common/error.h"
#include "instinct/eval/coco_mask.h"
#include "test_helpers.h"

using instinct::test::error_of;

namespace fs = std::filesystem;
using namespace instinct::eval;
using Counts = std::vector<uint32_t>;

namespace {

std::vector<uint8_t> parse_mask(const std::string& s) {
  std::vector<uint8_t> m(s.size());
  for (size_t i = 0; i < s.size(); ++i) m[i] = s[i] == '1';
  return m;
}

// Row-major -> column-major copy (what numpy order='F' hands pycocotools).
std::vector<uint8_t> to_column_major(const std::vector<uint8_t>& m, int h, int w) {
  std::vector<uint8_t> t(m.size());
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) t[static_cast<size_t>(x) * h + y] = m[static_cast<size_t>(y) * w + x];
  return t;
}

Rle rle_of(const nlohmann::json& e, const char* key = "counts") {
  return Rle{e["h"].get<int>(), e["w"].get<int>(), e[key].get<Counts>()};
}

// Checks every derived quantity the fixture entry carries against `r`. `bbox_always`: the file's
// bbox is toBbox of the counts as given (pycocotools), not only the tight box of canonical counts.
void expect_described(const nlohmann::json& e, const Rle& r, bool bbox_always = false) {
  const std::string name = e["name"];
  const Rle want = rle_of(e);
  EXPECT_EQ(r.counts, want.counts) << name;
  EXPECT_EQ(rle_to_string(r), e["string"].get<std::string>()) << name;
  EXPECT_EQ(rle_from_string(e["string"], want.h, want.w), want) << name;
  EXPECT_EQ(rle_area(r), e["area"].get<uint64_t>()) << name;
  const bool canonical = e.value("canonical", true);
  if (canonical || bbox_always) {
    EXPECT_EQ(rle_to_bbox(r), (e["bbox"].get<std::array<double, 4>>())) << name;
  }
  if (e.contains("mask")) {
    const auto m = parse_mask(e["mask"]);
    EXPECT_EQ(rle_decode(r), m) << name;
    if (canonical) {
      EXPECT_EQ(rle_encode(m.data(), r.h, r.w), r) << name;
    }
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Hand-derived vectors (independent of both implementations).

// 3x2 mask, rows {0,1},{1,1},{0,0}; column-major: col 0 = 0,1,0, col 1 = 1,1,0 -> runs 1,1,1,2,1.
// String: 1,1,1 raw (i <= 2); i=3: 2-counts[1] = 1; i=4: 1-counts[2] = 0 -> "11110".
// Area 3; box: x 0..1, y 0..1.
TEST(CocoMask, EncodeKnownSmallMask) {
  const std::vector<uint8_t> m = {0, 1, 1, 1, 0, 0};
  const Rle r = rle_encode(m.data(), 3, 2);
  EXPECT_EQ(r.counts, (Counts{1, 1, 1, 2, 1}));
  EXPECT_EQ(rle_to_string(r), "11110");
  EXPECT_EQ(rle_area(r), 3u);
  EXPECT_EQ(rle_to_bbox(r), (std::array<double, 4>{0, 0, 2, 2}));
  const std::vector<uint8_t> cm = {0, 1, 0, 1, 1, 0};  // the same mask, column-major
  EXPECT_EQ(rle_encode(cm.data(), 3, 2, /*column_major_input=*/true), r);
  EXPECT_EQ(rle_decode(r), m);
  // Any non-zero byte is on.
  const std::vector<uint8_t> m255 = {0, 255, 7, 1, 0, 0};
  EXPECT_EQ(rle_encode(m255.data(), 3, 2), r);
}

// 45 = 0b01'01101: low group 13 with the continuation bit -> 48+45 = ']', then 1 -> '1'.
// 20 = 0b10100: bit 0x10 set and nothing left, so a second group '0' keeps it positive: "d0"
//   (48 + (20|0x20) = 100 = 'd'). i=3: 3 - counts[1] = 3 - 20 = -17: low 5 bits 01111 = 15,
//   rest -1 but bit 0x10 clear -> continue: '_' (48+47), then 31 with 0x10 set and rest -1 -> 'O'.
// 16 alone -> "`0"; 15 -> '?'; 0 -> '0'.
TEST(CocoMask, StringKnownVectors) {
  EXPECT_EQ(rle_to_string({5, 10, {3, 2, 45}}), "32]1");
  EXPECT_EQ(rle_to_string({4, 7, {0, 20, 5, 3}}), "0d05_O");
  EXPECT_EQ(rle_to_string({4, 4, {16}}), "`0");
  EXPECT_EQ(rle_to_string({3, 5, {0, 15}}), "0?");
  EXPECT_EQ(rle_from_string("32]1", 5, 10).counts, (Counts{3, 2, 45}));
  EXPECT_EQ(rle_from_string("0d05_O", 4, 7).counts, (Counts{0, 20, 5, 3}));
  EXPECT_EQ(rle_from_string("", 0, 0).counts, Counts{});
}

// Box [1,1,3,2] in 6x6: vertices x5 = (5,5) (5,15) (20,15) (20,5). The bottom edge y=15 crosses the
// centre columns x = n+0.5 (u: 5n+2 -> 5n+3) for n = 1,2,3 with row ceil((15+.5)/5-.5) = ceil(2.6) = 3;
// the top edge y=5 with row ceil(0.6) = 1. Toggles at n*6+1 and n*6+3: 7,9,13,15,19,21 ->
// runs 7,2,4,2,4,2,15: columns 1..3, rows 1..2 (the pixels whose centres are inside).
TEST(CocoMask, BoxKnownVectors) {
  EXPECT_EQ(rle_from_bbox(1, 1, 3, 2, 6, 6).counts, (Counts{7, 2, 4, 2, 4, 2, 15}));
  // Full image: each column toggles at its top (row 0) and its bottom (row H = next column's top);
  // the coinciding toggles cancel, leaving one run.
  EXPECT_EQ(rle_from_bbox(0, 0, 7, 5, 5, 7).counts, (Counts{0, 35}));
  // [0.5,0.5,1,1]: 2.5 and 7.5 round up to 3 and 8 (x = 0.6 and 1.6): only pixel (1,1) whose centre
  // 1.5 lies in [0.6, 1.6]; index 1*3+1 = 4.
  EXPECT_EQ(rle_from_bbox(0.5, 0.5, 1, 1, 3, 3).counts, (Counts{4, 1, 4}));
  // Entirely outside / zero width: empty.
  EXPECT_EQ(rle_from_bbox(10, 10, 3, 3, 4, 4).counts, (Counts{16}));
  EXPECT_EQ(rle_from_bbox(1, 1, 0, 3, 4, 4).counts, (Counts{16}));
}

// h=4, w=3, runs {3,2,7}: pixels 3 = (x0,y3) and 4 = (x1,y0); the 1-run wraps a column, so the box is
// full height: [0, 0, 2, 4]. Runs {2,4,6}: pixels 2..5 = (x0,y2) (x0,y3) (x1,y0) (x1,y1): the run's
// first and last rows are 2 and 1, but it wraps, so again [0, 0, 2, 4] (not [0, 1, 2, 2]).
// No on pixel -> zeros.
TEST(CocoMask, BboxKnownVectors) {
  EXPECT_EQ(rle_to_bbox({4, 3, {3, 2, 7}}), (std::array<double, 4>{0, 0, 2, 4}));
  EXPECT_EQ(rle_to_bbox({4, 3, {2, 4, 6}}), (std::array<double, 4>{0, 0, 2, 4}));
  EXPECT_EQ(rle_to_bbox({4, 3, {5, 1, 6}}), (std::array<double, 4>{1, 1, 1, 1}));
  EXPECT_EQ(rle_to_bbox({4, 3, {12}}), (std::array<double, 4>{0, 0, 0, 0}));
  EXPECT_EQ(rle_to_bbox({4, 3, {0, 12}}), (std::array<double, 4>{0, 0, 3, 4}));
  EXPECT_EQ(rle_to_bbox({}), (std::array<double, 4>{0, 0, 0, 0}));
  // Verbatim counts {0,0,0,5} in 1x5 (all on): at j=1 the pixel index cc-1 wraps to 2^32-1, so the
  // column end xe does too and the uint32 width xe-xs+1 wraps to 0, as in pycocotools: {0,0,0,1}.
  // The IoU box pre-check then gives 0 against anything (pycocotools too).
  const Rle wrapped{1, 5, {0, 0, 0, 5}};
  EXPECT_EQ(rle_to_bbox(wrapped), (std::array<double, 4>{0, 0, 0, 1}));
  EXPECT_EQ(rle_iou(wrapped, Rle{1, 5, {0, 5}}), 0.0);
}

// 2x2: D = column 0 (runs 0,2,2), G = all (0,4): |D&G| = 2, |D|G| = 4 -> 0.5; crowd G: 2/|D| = 1.
// D = all, crowd G = column 0: 2/|D| = 0.5. Empty vs empty: 0 (no intersection).
TEST(CocoMask, IouKnownVectors) {
  const Rle col0{2, 2, {0, 2, 2}}, all{2, 2, {0, 4}}, none{2, 2, {4}}, col1{2, 2, {2, 2}};
  EXPECT_DOUBLE_EQ(rle_iou(col0, all), 0.5);
  EXPECT_DOUBLE_EQ(rle_iou(col0, all, true), 1.0);
  EXPECT_DOUBLE_EQ(rle_iou(all, col0, true), 0.5);
  EXPECT_DOUBLE_EQ(rle_iou(col0, col0), 1.0);
  EXPECT_EQ(rle_iou(none, none), 0.0);
  EXPECT_EQ(rle_iou(none, none, true), 0.0);
  EXPECT_EQ(rle_iou(col0, none), 0.0);
  EXPECT_EQ(rle_iou(col0, col1), 0.0);
  EXPECT_EQ(rle_merge({col0, col1}).counts, (Counts{0, 4}));
  EXPECT_EQ(rle_merge({col0, col1}, true).counts, (Counts{4}));
  EXPECT_EQ(rle_merge({col0, all}, true), col0);
  EXPECT_EQ(rle_merge({col0}), col0);
  EXPECT_EQ(rle_merge({}), Rle{});
}

// The walk is symmetric per edge, so reversing or rotating the vertex list cannot change the mask.
TEST(CocoMask, PolygonOrderInvariance) {
  const std::vector<double> star = {15, 1, 18, 10, 28, 10.3, 20, 15, 24, 25.7, 15, 18, 6.2, 25, 10, 15, 2, 10, 12, 9.6};
  const Rle r = rle_from_polygon(star, 27, 30);
  EXPECT_GT(rle_area(r), 100u);
  std::vector<double> rev;
  for (size_t i = star.size(); i >= 2; i -= 2) rev.insert(rev.end(), {star[i - 2], star[i - 1]});
  EXPECT_EQ(rle_from_polygon(rev, 27, 30), r);
  std::vector<double> rot(star.begin() + 6, star.end());
  rot.insert(rot.end(), star.begin(), star.begin() + 6);
  EXPECT_EQ(rle_from_polygon(rot, 27, 30), r);
  // A box as a polygon in any order is the box.
  EXPECT_EQ(rle_from_polygon({4.3, 1.2, 4.3, 6.9, 1.1, 6.9, 1.1, 1.2}, 9, 8), rle_from_bbox(1.1, 1.2, 3.2, 5.7, 9, 8));
}

TEST(CocoMask, RoundTripsRandomMasks) {
  std::mt19937 gen(7);
  for (int it = 0; it < 200; ++it) {
    const int h = 1 + static_cast<int>(gen() % 40), w = 1 + static_cast<int>(gen() % 40);
    const double p = (gen() % 100) / 100.0;
    std::vector<uint8_t> m(static_cast<size_t>(h) * w);
    for (auto& v : m) v = (gen() % 1000) < p * 1000;
    const Rle r = rle_encode(m.data(), h, w);
    ASSERT_EQ(rle_decode(r), m) << h << "x" << w;
    ASSERT_EQ(rle_from_string(rle_to_string(r), h, w), r);
    ASSERT_EQ(rle_encode(to_column_major(m, h, w).data(), h, w, true), r);
    uint64_t on = 0;
    for (auto v : m) on += v;
    ASSERT_EQ(rle_area(r), on);
    ASSERT_DOUBLE_EQ(rle_iou(r, r), on ? 1.0 : 0.0);
  }
}

TEST(CocoMask, StringErrorsNameTheOffence) {
  EXPECT_NE(error_of([] { rle_from_string("3!2", 1, 5); }).find("'!' (code 33) at offset 1"), std::string::npos);
  EXPECT_NE(error_of([] { rle_from_string("3p", 1, 3); }).find("offset 1"), std::string::npos);  // 'p' = 112
  EXPECT_NE(error_of([] { rle_from_string("32]", 5, 10); }).find("ends inside the value starting at offset 2"),
            std::string::npos);
  EXPECT_NE(error_of([] { rle_from_string("O", 1, 1); }).find("decodes to -1"), std::string::npos);
  EXPECT_NE(error_of([] { rle_from_string("32]1", 5, 9); }).find("sum to 50, expected h*w = 5*9 = 45"),
            std::string::npos);
  EXPECT_NE(error_of([] { rle_from_string("oooooooooo", 5, 9); }).find("longer than 8"), std::string::npos);
}

TEST(CocoMask, ApiErrors) {
  const Rle a{2, 2, {0, 4}}, b{2, 3, {0, 6}}, bad{2, 2, {1, 2}};
  EXPECT_NE(error_of([&] { rle_iou(a, b); }).find("2x2 but ground truth is 2x3"), std::string::npos);
  EXPECT_NE(error_of([&] { rle_merge({a, b}); }).find("RLE 1 is 2x3"), std::string::npos);
  EXPECT_NE(error_of([&] { rle_iou(a, bad); }).find("sum to 3"), std::string::npos);
  EXPECT_NE(error_of([&] { rle_decode(bad); }).find("sum to 3"), std::string::npos);
  EXPECT_NE(error_of([] { rle_from_polygon({1, 2, 3}, 4, 4); }).find("3 coordinates"), std::string::npos);
  EXPECT_NE(error_of([] { rle_from_polygon({1, 2, 3, NAN}, 4, 4); }).find("coordinate 3"), std::string::npos);
  EXPECT_NE(error_of([] { rle_from_polygon({1, 2, 3, 1e9}, 4, 4); }).find("2^27"), std::string::npos);
  EXPECT_NE(error_of([] { rle_encode(nullptr, -1, 4); }).find("-1x4"), std::string::npos);
}

TEST(CocoMask, SegmentationErrors) {
  using nlohmann::json;
  auto err = [](const json& j, int h = 6, int w = 7) { return error_of([&] { segmentation_to_rle(j, h, w); }); };
  EXPECT_NE(err(json::array()).find("empty polygon list"), std::string::npos);
  EXPECT_NE(err(json::parse("[[1,2,3,4,5]]")).find("polygon 0 has 5 numbers"), std::string::npos);
  EXPECT_NE(err(json::parse("[[1,2,3,4,5,6],[1,2,3,4]]")).find("polygon 1 has 4 numbers"), std::string::npos);
  EXPECT_NE(err(json::parse("[[1,2,3,4],[1,2,3,4,5,6]]")).find("boxes [x, y, w, h], but polygon 1 has 6"),
            std::string::npos);
  EXPECT_NE(err(json::parse("[[1,2,3,\"a\",5,6]]")).find("polygon 0 item 3 is string"), std::string::npos);
  EXPECT_NE(err(json::parse("[5]")).find("polygon 0 is number"), std::string::npos);
  EXPECT_NE(err(json::parse("\"abc\"")).find("got string"), std::string::npos);
  EXPECT_NE(err(json::parse("{\"counts\": [42]}")).find("without \"size\""), std::string::npos);
  EXPECT_NE(err(json::parse("{\"size\": [6], \"counts\": [42]}")).find("\"size\" is [6]"), std::string::npos);
  EXPECT_NE(err(json::parse("{\"size\": [7, 6], \"counts\": [42]}")).find("image is h=6, w=7"), std::string::npos);
  EXPECT_NE(err(json::parse("{\"size\": [6, 7], \"counts\": [40, -2, 4]}")).find("counts[1] = -2"),
            std::string::npos);
  EXPECT_NE(err(json::parse("{\"size\": [6, 7], \"counts\": [40, 1]}")).find("sum to 41"), std::string::npos);
  EXPECT_NE(err(json::parse("{\"size\": [6, 7], \"counts\": {}}")).find("\"counts\" is object"), std::string::npos);
  EXPECT_NE(err(json::parse("{\"size\": [6, 7], \"counts\": \"3 \"}")).find("' ' (code 32) at offset 1"),
            std::string::npos);
  // The accepted forms agree with each other.
  const Rle box = rle_from_bbox(1, 1, 3, 2, 6, 7);
  EXPECT_EQ(segmentation_to_rle(json::parse("[[1,1,4,1,4,3,1,3]]"), 6, 7), box);
  EXPECT_EQ(segmentation_to_rle(json::parse("[[1,1,3,2]]"), 6, 7), box);  // pycocotools' box quirk
  EXPECT_EQ(segmentation_to_rle(json{{"size", {6, 7}}, {"counts", box.counts}}, 6, 7), box);
  EXPECT_EQ(segmentation_to_rle(json{{"size", {6, 7}}, {"counts", rle_to_string(box)}}, 6, 7), box);
}

// Long runs: a 4000x4000 mask encodes, decodes and scores without trouble.
TEST(CocoMask, LargeMask) {
  const int h = 4000, w = 4000;
  std::vector<uint8_t> m(static_cast<size_t>(h) * w, 0);
  for (int y = 100; y < 3900; ++y)
    for (int x = 5; x < 3000; ++x) m[static_cast<size_t>(y) * w + x] = 1;
  const Rle r = rle_encode(m.data(), h, w);
  EXPECT_EQ(r.counts.size(), 2u * (3000 - 5) + 1);
  EXPECT_EQ(rle_area(r), uint64_t{3800} * 2995);
  EXPECT_EQ(rle_to_bbox(r), (std::array<double, 4>{5, 100, 2995, 3800}));
  EXPECT_EQ(rle_from_string(rle_to_string(r), h, w), r);
  EXPECT_EQ(rle_decode(r), m);
  EXPECT_EQ(rle_from_bbox(5, 100, 2995, 3800, h, w), r);
}

// ---------------------------------------------------------------------------------------------
// Parity with a reference: the same checks on coco/cases.json (numpy) and pycocotools/cases.json.

class CocoMaskFixtures : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    std::string dir;
    INSTINCT_REFERENCE_FIXTURE_OR_SKIP(dir, GetParam());
    static std::map<std::string, nlohmann::json> loaded;
    if (!loaded.count(dir)) {
      std::ifstream f(dir + "/cases.json");
      ASSERT_TRUE(f) << "missing fixture " << dir << "/cases.json (tests/python/fixtures_" << GetParam() << ".py)";
      loaded[dir] = nlohmann::json::parse(f);
    }
    cases_ = &loaded[dir];
  }

  // The cases of one section; fails when the section is missing or smaller than the numpy file's.
  const nlohmann::json& section(const char* name, size_t at_least) {
    static const nlohmann::json empty = nlohmann::json::array();
    if (!cases_->contains(name)) {
      ADD_FAILURE() << GetParam() << ": fixture section '" << name << "' missing";
      return empty;
    }
    const auto& cs = (*cases_)[name];
    EXPECT_GE(cs.size(), at_least) << GetParam() << " section " << name;
    std::cout << "[ compared ] " << GetParam() << " " << name << ": " << cs.size() << " cases\n";
    return cs;
  }

  // pycocotools' bbox is toBbox of the counts as given, also when they are not canonical.
  bool bbox_always() const { return GetParam() == "pycocotools"; }

  // Stops a loop after a few failing cases: one systematic bug should not print thousands.
  static bool too_many_failures() {
    const int n = ::testing::UnitTest::GetInstance()->current_test_info()->result()->total_part_count();
    if (n < 20) return false;
    ADD_FAILURE() << "stopping this section after " << n << " failures";
    return true;
  }

  const nlohmann::json* cases_ = nullptr;
};

TEST_P(CocoMaskFixtures, Encode) {
  for (const auto& e : section("encode", 30)) {
    const int h = e["h"], w = e["w"];
    const auto m = parse_mask(e["mask"]);
    const Rle r = rle_encode(m.data(), h, w);
    expect_described(e, r, bbox_always());
    EXPECT_EQ(rle_encode(to_column_major(m, h, w).data(), h, w, true), r) << e["name"];
    if (too_many_failures()) break;
  }
}

TEST_P(CocoMaskFixtures, Strings) {
  for (const auto& e : section("strings", 9)) {
    const Rle r = rle_of(e);
    expect_described(e, r, bbox_always());
    EXPECT_EQ(rle_from_string(rle_to_string(r), r.h, r.w), r) << e["name"];
    if (!e.contains("mask") && e.value("canonical", true)) {  // large: round trip through pixels
      const auto m = rle_decode(r);
      EXPECT_EQ(rle_encode(m.data(), r.h, r.w), r) << e["name"];
    }
    if (too_many_failures()) break;
  }
}

TEST_P(CocoMaskFixtures, Polygons) {
  for (const auto& e : section("polygons", 30)) {
    const Rle r = segmentation_to_rle(e["segmentation"], e["h"], e["w"]);
    EXPECT_EQ(r.h, e["h"].get<int>());
    expect_described(e, r, bbox_always());
    if (too_many_failures()) break;
  }
}

TEST_P(CocoMaskFixtures, Boxes) {
  for (const auto& e : section("boxes", 10)) {
    const auto b = e["box"].get<std::array<double, 4>>();
    expect_described(e, rle_from_bbox(b[0], b[1], b[2], b[3], e["h"], e["w"]), bbox_always());
    if (too_many_failures()) break;
  }
}

TEST_P(CocoMaskFixtures, Merge) {
  for (const auto& e : section("merge", 6)) {
    std::vector<Rle> in;
    for (const auto& c : e["inputs"]) in.push_back({e["h"], e["w"], c.get<Counts>()});
    const Rle got = rle_merge(in, e["intersect"].get<bool>());
    if (e.contains("string")) {  // pycocotools: its exact string (zero-length runs included), and the mask
      EXPECT_EQ(rle_to_string(got), e["string"].get<std::string>()) << e["name"];
      const auto m = rle_decode(got);
      EXPECT_EQ(rle_encode(m.data(), got.h, got.w).counts, e["counts"].get<Counts>()) << e["name"];
    } else {
      EXPECT_EQ(got.counts, e["counts"].get<Counts>()) << e["name"];
    }
    if (too_many_failures()) break;
  }
}

TEST_P(CocoMaskFixtures, Iou) {
  for (const auto& e : section("iou", 20)) {
    const double got = rle_iou(rle_of(e, "dt"), rle_of(e, "gt"), e["crowd"].get<bool>());
    EXPECT_EQ(got, e["iou"].get<double>()) << e["name"];  // both sides divide the same two integers
    if (too_many_failures()) break;
  }
}

INSTANTIATE_TEST_SUITE_P(CocoMask, CocoMaskFixtures, ::testing::Values("coco", "pycocotools"),
                         [](const ::testing::TestParamInfo<std::string>& p) { return p.param; });
