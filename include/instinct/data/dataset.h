#pragma once
// Image datasets: an indexable list of image files. Datasets only name files; decoding and
// preprocessing happen in the Loader's worker threads (see loader.h).
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace instinct::data {

/// An indexable, immutable list of image files. Implementations must be safe to call from several
/// threads at once (the loader's workers call path() concurrently).
class Dataset {
 public:
  virtual ~Dataset() = default;
  /// Number of images.
  virtual size_t size() const = 0;
  /// Path of image i (0 <= i < size()), readable by read_file().
  virtual std::string path(size_t i) const = 0;
  /// A stable id of image i (COCO image id; the index for folders).
  virtual int64_t image_id(size_t i) const { return static_cast<int64_t>(i); }
};

/// Every .jpg .jpeg .png .bmp .webp .ppm (extension case-insensitive) under `root`, recursively,
/// sorted by full path (byte-wise) so the index of a file is stable across machines.
/// Throws instinct::Error naming `root` when it is missing, not a directory, or holds no image.
class ImageFolderDataset : public Dataset {
 public:
  explicit ImageFolderDataset(const std::string& root);
  size_t size() const override { return paths_.size(); }
  std::string path(size_t i) const override { return paths_.at(i); }
  /// The folder the dataset was built from.
  const std::string& root() const { return root_; }

 private:
  std::string root_;
  std::vector<std::string> paths_;
};

/// One entry of a COCO "images" array.
struct CocoImage {
  int64_t id = 0;
  std::string file_name;
  int width = 0;
  int height = 0;
};

/// The images listed by a COCO-format annotation file (its "images" array: id, file_name, width,
/// height), in file order, resolved against `image_root`. Annotations are not read here.
/// Throws instinct::Error naming the file (and the key / array index) on missing or malformed JSON.
class CocoImageDataset : public Dataset {
 public:
  CocoImageDataset(const std::string& annotations_json, const std::string& image_root);
  size_t size() const override { return images_.size(); }
  std::string path(size_t i) const override;
  int64_t image_id(size_t i) const override { return images_.at(i).id; }
  /// The parsed entry i (width/height as stated in the JSON, not verified against the file).
  const CocoImage& image(size_t i) const { return images_.at(i); }

 private:
  std::string root_;
  std::vector<CocoImage> images_;
};

}  // namespace instinct::data
