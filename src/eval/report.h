#pragma once
// Scoring and reporting shared by model evaluation and results-file evaluation: every prediction of
// every model is scored against its target here, so both modes produce the same table and the same
// report.json (docs/evaluation.md). Torch-free.
#include <nlohmann/json_fwd.hpp>

#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "instinct/eval/cgf1.h"
#include "instinct/eval/coco.h"

namespace instinct::eval {

/// One prediction for one target and prompt.
struct ScoredPrediction {
  Rle mask;            ///< at the image's original size; empty = no prediction
  double score = 0;    ///< box/point: the chosen mask's predicted IoU; concept: the instance score
  bool kept = true;    ///< concept: score >= threshold (otherwise the mask is empty)
  bool missing = false;  ///< results files: no row for this target (scored as an empty mask)
  bool has_box = false;  ///< concept: `box` holds the kept instance's box
  std::array<double, 4> box{};  ///< concept: x0, y0, x1, y1 in original pixels (SAM3's processor output)
};

class ReportBuilder {
 public:
  /// `prompts` in table order (concept, box, point); cgF1 is reported when protocol.cgf1 is set.
  ReportBuilder(const CocoDataset& ds, ProtocolConfig protocol, std::vector<std::string> prompts);

  /// Declares a model (table order = declaration order; the first is the 100% reference).
  /// trunk_params < 0: unknown (results files).
  void add_model(const std::string& name, int64_t trunk_params);
  /// Scores a prediction for `target` of `img` (IoU, empty union = 0) and records a report row.
  /// Returns the IoU.
  double add(const std::string& model, const CocoImageRecord& img, const Target& target, const std::string& prompt,
             const ScoredPrediction& pred);
  /// Records a cgF1 (image, category) pair: `dt` = the model's predictions with score >= threshold.
  void add_cgf1(const std::string& model, const CocoImageRecord& img, int category_id, const std::vector<Rle>& dt);
  /// Counts an image that could not be evaluated (unreadable file).
  void count_skipped_image() { ++images_skipped_; }
  /// Number of distinct images and targets seen through add() (for progress lines).
  int64_t targets() const { return targets_; }

  /// Prints the table: one row per model with trunk parameters and, per prompt mode, the mean IoU
  /// with its percentage of the first model.
  void print_table(std::FILE* out, size_t n_images) const;
  /// The full report (format instinct-eval-report v1): protocol, counts, summary, rows, cgf1 pairs;
  /// `extra` keys are merged at the top level.
  nlohmann::json to_json(size_t n_images, const nlohmann::json& extra) const;

 private:
  struct ModelStats {
    int64_t trunk_params = -1;
    std::map<std::string, std::vector<double>> ious;  // prompt -> values
    std::map<std::string, int64_t> missing;           // prompt -> missing predictions
    std::vector<CgF1Pair> cgf1;
  };
  const CocoDataset& ds_;
  ProtocolConfig protocol_;
  std::vector<std::string> prompts_, order_;
  std::map<std::string, ModelStats> models_;
  std::vector<nlohmann::json> rows_, cgf1_rows_;
  int64_t targets_ = 0, images_skipped_ = 0;
};

/// The protocol as a json object (every knob, as echoed in report.json).
nlohmann::json protocol_to_json(const ProtocolConfig& p);

}  // namespace instinct::eval
