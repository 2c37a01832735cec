#pragma once
// COCO instance annotations as compact per-image records, and the evaluation protocol built on them:
// which annotation is the target of an image and which box / point / concept prompt it gets
// (../shared/reference/evaluation.md, docs/evaluation.md).
#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "instinct/eval/coco_mask.h"

namespace instinct::eval {

/// One annotation; the segmentation is held as RLE at the image's size.
struct CocoAnnotation {
  int64_t id = 0;
  int64_t image_id = 0;
  int category_id = 0;
  std::array<double, 4> bbox{};  ///< x, y, w, h in original pixels
  double area = 0;               ///< as stated in the file (segmentation area)
  bool iscrowd = false;
  Rle rle;                       ///< the segmentation (polygons unioned, or the RLE)
};

/// One image with the indices of its annotations in CocoDataset::annotations().
struct CocoImageRecord {
  int64_t id = 0;
  std::string file_name;
  int width = 0, height = 0;
  std::vector<size_t> annotations;
};

/// An instances_*.json file: images sorted by id, categories by id, annotations per image.
class CocoDataset {
 public:
  /// Parses `path`. Errors (instinct::Error, one line) name the file and the offending entry: missing
  /// keys, an annotation whose image_id or category_id is not declared, a malformed segmentation, a
  /// duplicate image id. When `image_ids` is non-empty only those images (and their annotations) are
  /// kept; unknown ids in it are an error.
  static CocoDataset load(const std::string& path, const std::vector<int64_t>& image_ids = {});

  const std::vector<CocoImageRecord>& images() const { return images_; }
  const std::vector<CocoAnnotation>& annotations() const { return anns_; }
  /// Category name for an id (throws for unknown ids).
  const std::string& category_name(int id) const;
  /// All category ids, ascending.
  std::vector<int> category_ids() const;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::vector<CocoImageRecord> images_;
  std::vector<CocoAnnotation> anns_;
  std::map<int, std::string> categories_;
};

/// Image ids listed in a COCO-format subset file (its "images" array), in file order.
std::vector<int64_t> read_subset_ids(const std::string& path);

/// The knobs of the prompt protocol. Defaults are what InstinctSAM's table follows.
struct ProtocolConfig {
  int n_images = 500;                ///< first N images by id (0 = all)
  std::string subset;                ///< optional COCO json whose image ids define the subset (then in id order)
  std::string targets = "largest";   ///< largest (one per image: largest non-crowd with area >= min_area) | all (every non-crowd instance)
  double min_area = 1;               ///< minimum annotation area for a target
  std::string point = "centroid";    ///< centroid (mean of mask pixels; box centre if empty) | interior (distance-transform maximum)
  std::string mask_choice = "best_iou";  ///< box/point prompts: best_iou (highest predicted IoU of the 3 multimask outputs) | single (SAM3's multimask_output=False: the single-mask output, or the best multimask one when it is unstable; needs a version-2 bundle)
  double concept_threshold = 0.5;    ///< concept: keep instances with sigmoid(logit) x sigmoid(presence) >= this
  bool cgf1 = false;                 ///< also report SAM3's cgF1 for concepts (every category of each image + sampled absent ones)
  int cgf1_absent = 2;               ///< cgF1: absent categories sampled per image
  int cgf1_seed = 0;                 ///< cgF1: seed of the absent-category draw
  template <class V>
  void visit(V& v) {
    v("n_images", n_images, "first N images by id (0 = all)");
    v("subset", subset, "COCO json whose image ids define the evaluated subset");
    v("targets", targets, "largest (one target per image) | all (every non-crowd instance)");
    v("min_area", min_area, "minimum annotation area of a target");
    v("point", point, "centroid | interior (distance-transform maximum)");
    v("mask_choice", mask_choice, "box/point mask choice: best_iou (highest predicted IoU of the multimask outputs) | single (SAM3's single-mask output with its stability fallback)");
    v("concept_threshold", concept_threshold, "concept keep threshold on sigmoid(logit) x sigmoid(presence)");
    v("cgf1", cgf1, "also report SAM3's cgF1 (present categories + sampled absent ones per image)");
    v("cgf1_absent", cgf1_absent, "cgF1: absent categories sampled per image");
    v("cgf1_seed", cgf1_seed, "cgF1: seed of the absent-category draw");
  }
};

/// Throws unless every protocol field holds a known value.
void validate(const ProtocolConfig& cfg);

/// A prompt target: the annotation and its box / point prompts in original pixel coordinates.
struct Target {
  size_t annotation = 0;               ///< index into CocoDataset::annotations()
  std::array<double, 4> box_xyxy{};    ///< GT box as x0, y0, x1, y1
  std::array<double, 2> point{};       ///< positive click (x, y)
};

/// The images to evaluate: the subset (if any) or all, in id order, truncated to n_images.
std::vector<size_t> select_images(const CocoDataset& ds, const ProtocolConfig& cfg);

/// Targets of one image per the protocol (possibly none).
std::vector<Target> select_targets(const CocoDataset& ds, const CocoImageRecord& img, const ProtocolConfig& cfg);

/// Mean (x, y) of the mask's pixels, each pixel at its integer coordinate (as the seed's eval does
/// with numpy's nonzero); the centre of `box_xyxy` when the mask is empty.
std::array<double, 2> mask_centroid(const Rle& mask, const std::array<double, 4>& box_xyxy);

/// The mask pixel farthest from the background (exact Euclidean distance transform, pixels outside
/// the image count as background); ties go to the first pixel in row-major order. Box centre when
/// the mask is empty.
std::array<double, 2> interior_point(const Rle& mask, const std::array<double, 4>& box_xyxy);

/// Mean and median of values (0 for empty input).
struct Summary {
  double mean = 0, median = 0;
  size_t count = 0;
};
Summary summarize(std::vector<double> values);

}  // namespace instinct::eval
