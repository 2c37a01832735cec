#include "instinct/eval/coco.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <type_traits>
#include <unordered_map>

#include "instinct/common/error.h"

namespace instinct::eval {
using json = nlohmann::json;

namespace {
json read_json(const std::string& path) {
  std::ifstream f(path);
  INSTINCT_CHECK(f.good(), "annotation file '", path, "' cannot be opened");
  try {
    return json::parse(f);
  } catch (const json::exception& e) {
    fail("annotation file '", path, "' is not valid JSON: ", e.what());
  }
}

template <class T>
T get(const json& j, const char* key, const std::string& where) {
  INSTINCT_CHECK(j.is_object() && j.contains(key), where, ": missing key '", key, "'");
  if constexpr (std::is_integral_v<T>) {  // get<T> casts floats and wide integers (undefined or wrapping)
    const json& v = j.at(key);
    const bool fits = v.is_number_unsigned()  ? v.get<uint64_t>() <= uint64_t(std::numeric_limits<T>::max())
                      : v.is_number_integer() ? v.get<int64_t>() >= int64_t(std::numeric_limits<T>::min()) &&
                                                    v.get<int64_t>() <= int64_t(std::numeric_limits<T>::max())
                                              : false;
    INSTINCT_CHECK(fits, where, ": key '", key, "' is ", v.is_primitive() ? v.dump().substr(0, 40) : v.type_name(),
                   ", expected an integer in [", std::numeric_limits<T>::min(), ", ", std::numeric_limits<T>::max(), "]");
  }
  try {
    return j.at(key).get<T>();
  } catch (const json::exception&) {
    const json& v = j.at(key);  // a nested value is named by its type: dump() recurses
    fail(where, ": key '", key, "' has the wrong type (", v.is_primitive() ? v.dump().substr(0, 40) : v.type_name(), ")");
  }
}

constexpr int64_t kMaxPixels = int64_t(1) << 28;  // 16384 x 16384: masks of this size are decoded densely
}  // namespace

CocoDataset CocoDataset::load(const std::string& path, const std::vector<int64_t>& image_ids) {
  const json root = read_json(path);
  INSTINCT_CHECK(root.is_object() && root.contains("images") && root["images"].is_array(), path,
                 ": expected a COCO object with an 'images' array");
  CocoDataset ds;
  ds.path_ = path;
  if (root.contains("categories")) {
    INSTINCT_CHECK(root["categories"].is_array(), path, ": 'categories' must be an array");
    for (size_t i = 0; i < root["categories"].size(); ++i) {
      const auto& c = root["categories"][i];
      const std::string where = path + " categories[" + std::to_string(i) + "]";
      ds.categories_[get<int>(c, "id", where)] = get<std::string>(c, "name", where);
    }
  }
  std::set<int64_t> wanted(image_ids.begin(), image_ids.end());
  std::unordered_map<int64_t, size_t> by_id;
  std::set<int64_t> all_ids;
  for (size_t i = 0; i < root["images"].size(); ++i) {
    const auto& im = root["images"][i];
    const std::string where = path + " images[" + std::to_string(i) + "]";
    CocoImageRecord r;
    r.id = get<int64_t>(im, "id", where);
    INSTINCT_CHECK(all_ids.insert(r.id).second, where, ": duplicate image id ", r.id);
    if (!wanted.empty() && !wanted.count(r.id)) continue;
    r.file_name = get<std::string>(im, "file_name", where);
    // Checked as int64 before anything is sized by them (get<int> would wrap 2^32 + 5 to 5).
    const int64_t w = get<int64_t>(im, "width", where), h = get<int64_t>(im, "height", where);
    INSTINCT_CHECK(w > 0 && h > 0 && w <= kMaxPixels && h <= kMaxPixels && w * h <= kMaxPixels, where, " (id ", r.id,
                   "): image size ", w, " x ", h, " is not plausible; expected positive width and height with "
                   "width * height <= 2^28 (", kMaxPixels, ") pixels");
    r.width = static_cast<int>(w);
    r.height = static_cast<int>(h);
    ds.images_.push_back(std::move(r));
  }
  for (int64_t id : wanted) INSTINCT_CHECK(all_ids.count(id), path, ": subset image id ", id, " is not in this file");
  std::sort(ds.images_.begin(), ds.images_.end(), [](const auto& a, const auto& b) { return a.id < b.id; });
  for (size_t i = 0; i < ds.images_.size(); ++i) by_id[ds.images_[i].id] = i;
  if (root.contains("annotations")) {
    const auto& anns = root["annotations"];
    INSTINCT_CHECK(anns.is_array(), path, ": 'annotations' must be an array");
    for (size_t i = 0; i < anns.size(); ++i) {
      const auto& a = anns[i];
      const std::string where = path + " annotations[" + std::to_string(i) + "]";
      CocoAnnotation ann;
      ann.id = get<int64_t>(a, "id", where);
      ann.image_id = get<int64_t>(a, "image_id", where);
      INSTINCT_CHECK(all_ids.count(ann.image_id), where, " (id ", ann.id, "): image_id ", ann.image_id,
                     " is not declared in 'images'");
      auto it = by_id.find(ann.image_id);
      if (it == by_id.end()) continue;  // outside the subset
      ann.category_id = get<int>(a, "category_id", where);
      INSTINCT_CHECK(ds.categories_.count(ann.category_id), where, " (id ", ann.id, "): category_id ",
                     ann.category_id, " is not declared in 'categories'");
      ann.bbox = get<std::array<double, 4>>(a, "bbox", where);
      ann.iscrowd = a.contains("iscrowd") && (a["iscrowd"].is_boolean() ? a["iscrowd"].get<bool>()
                                                                         : get<int64_t>(a, "iscrowd", where) != 0);
      const auto& img = ds.images_[it->second];
      INSTINCT_CHECK(a.contains("segmentation"), where, ": missing key 'segmentation'");
      try {
        ann.rle = segmentation_to_rle(a["segmentation"], img.height, img.width);
      } catch (const Error& e) {
        fail(where, " (id ", ann.id, ", image_id ", ann.image_id, "): ", e.what());
      }
      ann.area = a.contains("area") ? get<double>(a, "area", where) : double(rle_area(ann.rle));
      ds.images_[it->second].annotations.push_back(ds.anns_.size());
      ds.anns_.push_back(std::move(ann));
    }
  }
  return ds;
}

const std::string& CocoDataset::category_name(int id) const {
  auto it = categories_.find(id);
  INSTINCT_CHECK(it != categories_.end(), path_, ": unknown category id ", id);
  return it->second;
}

std::vector<int> CocoDataset::category_ids() const {
  std::vector<int> ids;
  for (const auto& kv : categories_) ids.push_back(kv.first);
  return ids;
}

std::vector<int64_t> read_subset_ids(const std::string& path) {
  const json root = read_json(path);
  INSTINCT_CHECK(root.is_object() && root.contains("images") && root["images"].is_array(), path,
                 ": expected a COCO subset file with an 'images' array");
  std::vector<int64_t> ids;
  for (size_t i = 0; i < root["images"].size(); ++i)
    ids.push_back(get<int64_t>(root["images"][i], "id", path + " images[" + std::to_string(i) + "]"));
  INSTINCT_CHECK(!ids.empty(), path, ": the subset lists no images");
  return ids;
}

void validate(const ProtocolConfig& c) {
  INSTINCT_CHECK(c.n_images >= 0, "protocol.n_images must be >= 0, got ", c.n_images);
  INSTINCT_CHECK(c.targets == "largest" || c.targets == "all", "protocol.targets '", c.targets,
                 "' is unknown; valid: largest, all");
  INSTINCT_CHECK(c.point == "centroid" || c.point == "interior", "protocol.point '", c.point,
                 "' is unknown; valid: centroid, interior");
  INSTINCT_CHECK(c.mask_choice == "best_iou" || c.mask_choice == "single", "protocol.mask_choice '", c.mask_choice,
                 "' is unknown; valid: best_iou, single");
  INSTINCT_CHECK(c.concept_threshold >= 0 && c.concept_threshold <= 1, "protocol.concept_threshold must be in [0,1], got ",
                 c.concept_threshold);
  INSTINCT_CHECK(c.cgf1_absent >= 0, "protocol.cgf1_absent must be >= 0, got ", c.cgf1_absent);
}

std::vector<size_t> select_images(const CocoDataset& ds, const ProtocolConfig& cfg) {
  std::vector<size_t> out;
  for (size_t i = 0; i < ds.images().size(); ++i) {
    if (cfg.n_images > 0 && out.size() >= size_t(cfg.n_images)) break;
    out.push_back(i);
  }
  INSTINCT_CHECK(!out.empty(), ds.path(), ": no images to evaluate (empty subset?)");
  return out;
}

std::vector<Target> select_targets(const CocoDataset& ds, const CocoImageRecord& img, const ProtocolConfig& cfg) {
  std::vector<size_t> cands;
  for (size_t k : img.annotations) {
    const auto& a = ds.annotations()[k];
    if (!a.iscrowd && a.area >= cfg.min_area) cands.push_back(k);
  }
  if (cfg.targets == "largest" && !cands.empty()) {
    // Largest area; ties go to the annotation listed first.
    size_t best = cands[0];
    for (size_t k : cands)
      if (ds.annotations()[k].area > ds.annotations()[best].area) best = k;
    cands = {best};
  }
  std::vector<Target> out;
  for (size_t k : cands) {
    const auto& a = ds.annotations()[k];
    Target t;
    t.annotation = k;
    t.box_xyxy = {a.bbox[0], a.bbox[1], a.bbox[0] + a.bbox[2], a.bbox[1] + a.bbox[3]};
    t.point = cfg.point == "interior" ? interior_point(a.rle, t.box_xyxy) : mask_centroid(a.rle, t.box_xyxy);
    out.push_back(t);
  }
  return out;
}

std::array<double, 2> mask_centroid(const Rle& m, const std::array<double, 4>& box) {
  // Walk the column-major runs: pixel p is at (x = p / h, y = p % h).
  double sx = 0, sy = 0, n = 0;
  uint64_t pos = 0;
  for (size_t i = 0; i < m.counts.size(); ++i) {
    const uint64_t len = m.counts[i];
    if (i % 2 == 1) {
      for (uint64_t p = pos; p < pos + len; ++p) {
        sx += double(p / uint64_t(m.h));
        sy += double(p % uint64_t(m.h));
      }
      n += double(len);
    }
    pos += len;
  }
  if (n == 0) return {(box[0] + box[2]) / 2, (box[1] + box[3]) / 2};
  return {sx / n, sy / n};
}

namespace {
// Exact 1-D squared Euclidean distance transform of f (Felzenszwalb & Huttenlocher), in place.
void edt_1d(std::vector<double>& f, std::vector<double>& d, std::vector<int>& v, std::vector<double>& z) {
  const int n = int(f.size());
  const double inf = std::numeric_limits<double>::infinity();
  auto cross = [&](int q, int p) { return ((f[q] + double(q) * q) - (f[p] + double(p) * p)) / (2.0 * (q - p)); };
  int k = 0;
  v[0] = 0;
  z[0] = -inf;
  z[1] = inf;
  for (int q = 1; q < n; ++q) {
    double s = cross(q, v[k]);
    while (s <= z[k]) s = cross(q, v[--k]);
    ++k;
    v[k] = q;
    z[k] = s;
    z[k + 1] = inf;
  }
  k = 0;
  for (int q = 0; q < n; ++q) {
    while (z[k + 1] < q) ++k;
    d[q] = (q - v[k]) * double(q - v[k]) + f[v[k]];
  }
  f.swap(d);
}
}  // namespace

std::array<double, 2> interior_point(const Rle& m, const std::array<double, 4>& box) {
  if (rle_area(m) == 0) return {(box[0] + box[2]) / 2, (box[1] + box[3]) / 2};
  // Pad by one background pixel on every side so the image border counts as background.
  const int H = m.h + 2, W = m.w + 2;
  const auto mask = rle_decode(m);  // row-major h x w
  const double inf = double(H) * H + double(W) * W + 1;  // exceeds any squared distance; keeps arithmetic exact
  std::vector<double> g(size_t(H) * W, 0.0);
  for (int y = 0; y < m.h; ++y)
    for (int x = 0; x < m.w; ++x)
      if (mask[size_t(y) * m.w + x]) g[size_t(y + 1) * W + (x + 1)] = inf;
  const int n = std::max(H, W);
  std::vector<double> f, d(n + 1), z(n + 2);
  std::vector<int> v(n + 1);
  for (int x = 0; x < W; ++x) {  // columns
    f.assign(H, 0);
    for (int y = 0; y < H; ++y) f[y] = g[size_t(y) * W + x];
    d.resize(H);
    edt_1d(f, d, v, z);
    for (int y = 0; y < H; ++y) g[size_t(y) * W + x] = f[y];
  }
  for (int y = 0; y < H; ++y) {  // rows
    f.assign(g.begin() + long(y) * W, g.begin() + long(y + 1) * W);
    d.resize(W);
    edt_1d(f, d, v, z);
    std::copy(f.begin(), f.end(), g.begin() + long(y) * W);
  }
  double best = -1;
  std::array<double, 2> pt{0, 0};
  for (int y = 1; y <= m.h; ++y)
    for (int x = 1; x <= m.w; ++x)
      if (g[size_t(y) * W + x] > best) {
        best = g[size_t(y) * W + x];
        pt = {double(x - 1), double(y - 1)};
      }
  return pt;
}

Summary summarize(std::vector<double> v) {
  Summary s;
  s.count = v.size();
  if (v.empty()) return s;
  double sum = 0;
  for (double x : v) sum += x;
  s.mean = sum / double(v.size());
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  s.median = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
  return s;
}

}  // namespace instinct::eval
