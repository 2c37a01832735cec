#include "instinct/data/dataset.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "instinct/common/error.h"

namespace fs = std::filesystem;

namespace instinct::data {

namespace {
bool is_image_ext(const fs::path& p) {
  std::string e = p.extension().string();
  std::transform(e.begin(), e.end(), e.begin(), [](unsigned char c) { return std::tolower(c); });
  return e == ".jpg" || e == ".jpeg" || e == ".png" || e == ".bmp" || e == ".webp" || e == ".ppm";
}
}  // namespace

ImageFolderDataset::ImageFolderDataset(const std::string& root) : root_(root) {
  std::error_code ec;
  INSTINCT_CHECK(fs::is_directory(root, ec), "image folder '", root,
                 "' does not exist or is not a directory");
  for (auto it = fs::recursive_directory_iterator(root, fs::directory_options::follow_directory_symlink, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (it->is_regular_file(ec) && is_image_ext(it->path())) paths_.push_back(it->path().string());
  }
  INSTINCT_CHECK(!ec, "cannot list image folder '", root, "': ", ec.message());
  INSTINCT_CHECK(!paths_.empty(), "image folder '", root,
                 "' contains no .jpg/.jpeg/.png/.bmp/.webp/.ppm files");
  std::sort(paths_.begin(), paths_.end());
}

CocoImageDataset::CocoImageDataset(const std::string& annotations_json, const std::string& image_root)
    : root_(image_root) {
  std::ifstream f(annotations_json);
  INSTINCT_CHECK(f.good(), "cannot open COCO annotation file '", annotations_json, "'");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(f);
  } catch (const nlohmann::json::exception& e) {
    fail("COCO annotation file '", annotations_json, "': invalid JSON: ", e.what());
  }
  INSTINCT_CHECK(j.is_object() && j.contains("images") && j["images"].is_array(),
                 "COCO annotation file '", annotations_json, "': expected a top-level \"images\" array");
  const auto& arr = j["images"];
  images_.reserve(arr.size());
  for (size_t i = 0; i < arr.size(); ++i) {
    const auto& e = arr[i];
    auto where = [&](const char* key) {
      return detail::str_cat("COCO annotation file '", annotations_json, "': images[", i, "].", key);
    };
    INSTINCT_CHECK(e.is_object(), "COCO annotation file '", annotations_json, "': images[", i,
                   "] is not an object");
    CocoImage im;
    INSTINCT_CHECK(e.contains("id") && e["id"].is_number_integer(), where("id"),
                   ": expected an integer");
    INSTINCT_CHECK(e.contains("file_name") && e["file_name"].is_string(), where("file_name"),
                   ": expected a string");
    im.id = e["id"].get<int64_t>();
    im.file_name = e["file_name"].get<std::string>();
    for (const char* key : {"width", "height"}) {
      if (!e.contains(key)) continue;  // optional: only informative
      INSTINCT_CHECK(e[key].is_number_integer(), where(key), ": expected an integer");
      (std::string(key) == "width" ? im.width : im.height) = e[key].get<int>();
    }
    images_.push_back(std::move(im));
  }
  INSTINCT_CHECK(!images_.empty(), "COCO annotation file '", annotations_json,
                 "': \"images\" array is empty");
}

std::string CocoImageDataset::path(size_t i) const {
  return (fs::path(root_) / images_.at(i).file_name).string();
}

}  // namespace instinct::data
