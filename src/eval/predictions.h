#pragma once
// COCO-style results files scored by `instinct-eval --predictions` (docs/evaluation.md): predictions
// from other tools (e.g. Python SAM3) evaluated with the same targets and protocol as our models.
// Torch-free.
#include <cstdint>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "instinct/eval/coco.h"
#include "eval/report.h"

namespace instinct::eval {

/// Splits "NAME=PATH" into (NAME, PATH); a bare "PATH" is named after the file stem.
std::pair<std::string, std::string> split_named_path(const std::string& spec);

/// One row of a results file.
struct PredictionRow {
  int64_t image_id = 0;
  std::string prompt;          ///< box | point | concept
  int category_id = -1;        ///< required for concept rows
  int64_t annotation_id = -1;  ///< optional: the target annotation (needed for box/point with targets: all)
  double score = 1.0;          ///< concept: instance score sigmoid(logit) x sigmoid(presence); box/point: optional
  Rle mask;                    ///< "segmentation" (or "mask"): {size: [h, w], counts: RLE string or list}
};

/// The predictions of one model, indexed for target lookup.
class PredictionSet {
 public:
  /// Reads `spec` = "NAME=PATH" or "PATH". PATH holds a JSON array of rows, or an object with a "rows"
  /// array (an instinct-eval report.json). When the rows carry a "model" field with several values, only
  /// NAME's rows are used (NAME is then required). Rows must refer to images and categories of `ds`
  /// and masks must have their image's size; rows of images outside the evaluated set are ignored.
  /// Errors name the file, the row index and the key.
  static PredictionSet load(const std::string& spec, const CocoDataset& ds);

  const std::string& name() const { return name_; }
  const std::string& path() const { return path_; }
  size_t size() const { return rows_.size(); }

  /// The box/point prediction for the target `annotation_id` of `img`: rows of the image and prompt
  /// (with that annotation_id when rows carry one); the highest score wins, ties to the first row.
  /// Rows without annotation_id are an error when the image has several targets (`image_targets`).
  /// No row: an empty mask marked missing.
  ScoredPrediction find_prompt(const CocoImageRecord& img, int64_t annotation_id, const std::string& prompt,
                               size_t image_targets) const;
  /// The concept prediction for a category: its top-scoring row, kept when score >= threshold.
  ScoredPrediction find_concept(const CocoImageRecord& img, int category_id, double threshold) const;
  /// Every concept mask of the category with score >= threshold (cgF1).
  std::vector<Rle> concept_instances(int64_t image_id, int category_id, double threshold) const;

 private:
  std::string name_, path_;
  std::vector<PredictionRow> rows_;
  std::map<std::pair<int64_t, std::string>, std::vector<size_t>> by_image_prompt_;
};

}  // namespace instinct::eval
