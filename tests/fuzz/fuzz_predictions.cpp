// eval::PredictionSet::load (instinct-eval --predictions) on a results file, against a fixed small
// COCO dataset, then the lookups the evaluation makes.
#include "eval/predictions.h"
#include "fuzz_common.h"

using namespace instinct::eval;

namespace {
const char kInstances[] = R"({"images": [
  {"id": 1, "file_name": "a.jpg", "width": 8, "height": 6},
  {"id": 2, "file_name": "b.jpg", "width": 5, "height": 9},
  {"id": 7, "file_name": "c.jpg", "width": 1, "height": 1}],
 "categories": [{"id": 1, "name": "cat"}, {"id": 3, "name": "dog"}],
 "annotations": [
  {"id": 10, "image_id": 1, "category_id": 1, "bbox": [1, 1, 4, 3], "segmentation": [[1, 1, 5, 1, 5, 4, 1, 4]]},
  {"id": 11, "image_id": 1, "category_id": 3, "bbox": [0, 0, 2, 2], "segmentation": {"size": [6, 8], "counts": [0, 2, 4, 2, 40]}, "iscrowd": 1},
  {"id": 12, "image_id": 2, "category_id": 3, "bbox": [0, 0, 5, 9], "segmentation": {"size": [9, 5], "counts": "5X1"}}]})";
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const CocoDataset ds =
      CocoDataset::load(fuzz::write_file("instances.json", kInstances, sizeof kInstances - 1));
  if (size < 1) return 0;
  // First byte: whether the spec names the model ("student=PATH" selects that model's rows).
  const std::string path = fuzz::write_file("results.json", data + 1, size - 1);
  const std::string spec = (data[0] & 1) ? "student=" + path : path;
  fuzz::guarded([&] {
    PredictionSet ps = PredictionSet::load(spec, ds);
    for (const auto& img : ds.images()) {
      for (const auto& ann : img.annotations) {
        const int64_t id = ds.annotations()[ann].id;
        for (const char* prompt : {"box", "point"})
          for (size_t targets : {size_t(1), size_t(2)}) (void)ps.find_prompt(img, id, prompt, targets);
      }
      for (int cat : ds.category_ids()) {
        (void)ps.find_concept(img, cat, 0.5);
        (void)ps.concept_instances(img.id, cat, 0.0);
      }
    }
  });
  return 0;
}
