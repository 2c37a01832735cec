#include <gtest/gtest.h>

#include <fstream>

#include "instinct/common/error.h"
#include "instinct/eval/coco.h"
#include "test_helpers.h"

using instinct::test::error_of;

using namespace instinct;
using namespace instinct::eval;

namespace {
Rle from_rows(const std::vector<std::string>& rows) {
  const int h = int(rows.size()), w = int(rows[0].size());
  std::vector<uint8_t> m(size_t(h) * w);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) m[size_t(y) * w + x] = rows[y][x] == '#';
  return rle_encode(m.data(), h, w);
}

std::string write(const std::string& dir, const std::string& name, const std::string& text) {
  std::ofstream(dir + "/" + name) << text;
  return dir + "/" + name;
}

const char* kToy = R"({
 "images": [{"id": 7, "file_name": "b.jpg", "width": 6, "height": 4},
            {"id": 3, "file_name": "a.jpg", "width": 5, "height": 5},
            {"id": 9, "file_name": "c.jpg", "width": 4, "height": 4}],
 "categories": [{"id": 1, "name": "circle"}, {"id": 2, "name": "square"}],
 "annotations": [
  {"id": 10, "image_id": 3, "category_id": 1, "bbox": [0,0,2,2], "area": 4, "iscrowd": 0,
   "segmentation": [[0,0, 2,0, 2,2, 0,2]]},
  {"id": 11, "image_id": 3, "category_id": 2, "bbox": [1,1,3,3], "area": 9, "iscrowd": 0,
   "segmentation": [[1,1, 4,1, 4,4, 1,4]]},
  {"id": 12, "image_id": 3, "category_id": 2, "bbox": [0,0,5,5], "area": 25, "iscrowd": 1,
   "segmentation": {"size": [5,5], "counts": [0, 25]}},
  {"id": 13, "image_id": 7, "category_id": 1, "bbox": [0,0,1,1], "area": 0.5, "iscrowd": 0,
   "segmentation": [[0,0, 1,0, 1,1]]}
 ]})";
}  // namespace

TEST(CocoProtocol, LoadsSortedRecordsWithRles) {
  const auto dir = test::temp_dir("coco_load");
  auto ds = CocoDataset::load(write(dir, "a.json", kToy));
  ASSERT_EQ(ds.images().size(), 3u);
  EXPECT_EQ(ds.images()[0].id, 3);  // sorted by id
  EXPECT_EQ(ds.images()[2].id, 9);
  EXPECT_EQ(ds.images()[0].annotations.size(), 3u);
  EXPECT_TRUE(ds.images()[2].annotations.empty());
  EXPECT_EQ(ds.category_name(2), "square");
  const auto& crowd = ds.annotations()[ds.images()[0].annotations[2]];
  EXPECT_TRUE(crowd.iscrowd);
  EXPECT_EQ(rle_area(crowd.rle), 25u);
  // Subset keeps only the listed images.
  auto sub = CocoDataset::load(dir + "/a.json", {9, 7});
  ASSERT_EQ(sub.images().size(), 2u);
  EXPECT_EQ(sub.images()[0].id, 7);
  EXPECT_EQ(sub.annotations().size(), 1u);
}

TEST(CocoProtocol, LargestNonCrowdTargetAndMinArea) {
  const auto dir = test::temp_dir("coco_tgt");
  auto ds = CocoDataset::load(write(dir, "a.json", kToy));
  ProtocolConfig cfg;
  auto t = select_targets(ds, ds.images()[0], cfg);
  ASSERT_EQ(t.size(), 1u);
  EXPECT_EQ(ds.annotations()[t[0].annotation].id, 11);  // area 9 beats 4; the crowd (25) is excluded
  EXPECT_DOUBLE_EQ(t[0].box_xyxy[2], 4.0);
  EXPECT_DOUBLE_EQ(t[0].box_xyxy[3], 4.0);
  cfg.targets = "all";
  EXPECT_EQ(select_targets(ds, ds.images()[0], cfg).size(), 2u);
  cfg.min_area = 1;
  EXPECT_TRUE(select_targets(ds, ds.images()[1], cfg).empty());  // area 0.5 < min_area 1
  cfg.min_area = 0.5;
  EXPECT_EQ(select_targets(ds, ds.images()[1], cfg).size(), 1u);
  EXPECT_TRUE(select_targets(ds, ds.images()[2], cfg).empty());  // no annotations
  cfg.n_images = 2;
  EXPECT_EQ(select_images(ds, cfg).size(), 2u);
}

TEST(CocoProtocol, CentroidIsMeanPixelCoordinate) {
  // Pixels (x,y): (1,0) (2,0) (1,1) (2,1) (3,2) -> mean x = 9/5, mean y = 4/5.
  auto m = from_rows({".##..", ".##..", "...#."});
  auto c = mask_centroid(m, {0, 0, 5, 3});
  EXPECT_DOUBLE_EQ(c[0], 9.0 / 5);
  EXPECT_DOUBLE_EQ(c[1], 4.0 / 5);
  // Empty mask: box centre.
  auto e = mask_centroid(from_rows({"...", "..."}), {1, 2, 5, 8});
  EXPECT_DOUBLE_EQ(e[0], 3.0);
  EXPECT_DOUBLE_EQ(e[1], 5.0);
}

TEST(CocoProtocol, InteriorPointIsDistanceTransformMaximum) {
  // A 5x5 block inside a 7x9 image: the centre pixel (4,3) is 3 px from the background, unique max.
  auto m = from_rows({".........", ".#####...", ".#####...", ".#####...", ".#####...", ".#####...", "........."});
  auto p = interior_point(m, {0, 0, 9, 7});
  EXPECT_DOUBLE_EQ(p[0], 3.0);
  EXPECT_DOUBLE_EQ(p[1], 3.0);
  // Touching the border: the image edge counts as background. Full 3x4 image: centre rows/cols at
  // distance 2 from outside -> pixels (1,1),(2,1) tie; first in row-major order wins.
  auto full = from_rows({"####", "####", "####"});
  auto q = interior_point(full, {0, 0, 4, 3});
  EXPECT_DOUBLE_EQ(q[0], 1.0);
  EXPECT_DOUBLE_EQ(q[1], 1.0);
  // A C shape whose centroid lies outside the object: the interior point is on the object.
  auto c = from_rows({"#####", "#....", "#....", "#....", "#####"});
  auto cen = mask_centroid(c, {0, 0, 5, 5});
  auto ip = interior_point(c, {0, 0, 5, 5});
  EXPECT_EQ(rle_decode(c)[size_t(std::lround(cen[1])) * 5 + size_t(std::lround(cen[0]))], 0);
  EXPECT_EQ(rle_decode(c)[size_t(ip[1]) * 5 + size_t(ip[0])], 1);
}

TEST(CocoProtocol, SummaryMeanMedian) {
  auto s = summarize({0.5, 0.1, 1.0, 0.2});
  EXPECT_DOUBLE_EQ(s.mean, 0.45);
  EXPECT_DOUBLE_EQ(s.median, 0.35);
  EXPECT_EQ(s.count, 4u);
  EXPECT_EQ(summarize({}).count, 0u);
}

TEST(CocoProtocol, BadAnnotationsAreOneLineErrors) {
  const auto dir = test::temp_dir("coco_bad");
  auto msg = error_of([&] {
    CocoDataset::load(write(dir, "u.json", R"({"images":[{"id":1,"file_name":"a","width":2,"height":2}],
      "categories":[{"id":1,"name":"x"}],
      "annotations":[{"id":5,"image_id":2,"category_id":1,"bbox":[0,0,1,1],"segmentation":[[0,0,1,0,1,1]]}]})"));
  });
  EXPECT_NE(msg.find("image_id 2 is not declared"), std::string::npos) << msg;
  msg = error_of([&] {
    CocoDataset::load(write(dir, "c.json", R"({"images":[{"id":1,"file_name":"a","width":2,"height":2}],
      "categories":[{"id":1,"name":"x"}],
      "annotations":[{"id":5,"image_id":1,"category_id":4,"bbox":[0,0,1,1],"segmentation":[[0,0,1,0,1,1]]}]})"));
  });
  EXPECT_NE(msg.find("category_id 4"), std::string::npos) << msg;
  msg = error_of([&] {
    CocoDataset::load(write(dir, "r.json", R"({"images":[{"id":1,"file_name":"a","width":2,"height":2}],
      "categories":[{"id":1,"name":"x"}],
      "annotations":[{"id":5,"image_id":1,"category_id":1,"bbox":[0,0,1,1],"segmentation":{"size":[2,2],"counts":"0~~~"}}]})"));
  });
  EXPECT_NE(msg.find("id 5"), std::string::npos) << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  msg = error_of([&] { read_subset_ids(write(dir, "s.json", R"({"images": []})")); });
  EXPECT_NE(msg.find("no images"), std::string::npos) << msg;
  ProtocolConfig p;
  p.point = "middle";
  msg = error_of([&] { validate(p); });
  EXPECT_NE(msg.find("protocol.point 'middle'"), std::string::npos) << msg;
}
