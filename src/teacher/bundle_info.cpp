// bundle.json: reading and validating the manifest of a teacher bundle (torch-free, so that
// tests/fuzz can fuzz it without LibTorch's TorchScript runtime).
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "instinct/common/error.h"
#include "instinct/teacher/bundle.h"

namespace instinct::teacher {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string join(const std::vector<std::string>& v, const char* sep = ", ") {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? sep : "") + v[i];
  return s;
}

// A JSON value for a one-line message: scalars and flat arrays as written, anything else by its type
// (dump() recurses: a deeply nested value would overflow the stack).
std::string shown(const json& j) {
  if (j.is_primitive()) return j.dump();
  if (j.is_array() && j.size() <= 8 && std::all_of(j.begin(), j.end(), [](const json& x) { return x.is_primitive(); }))
    return j.dump();
  return j.type_name();
}

// bundle.json field access with errors that name the file and the key path.
struct JsonFields {
  std::string file;

  [[noreturn]] void bad(const std::string& key, const std::string& what) const {
    fail("bundle.json ", file, ": key '", key, "': ", what);
  }
  const json& get(const json& obj, const std::string& name, const std::string& key) const {
    auto it = obj.find(name);
    if (it == obj.end()) bad(key, "missing");
    return *it;
  }
  int pos_int(const json& obj, const std::string& name, const std::string& prefix = "") const {
    const std::string key = prefix + name;
    const json& j = get(obj, name, key);
    if (!j.is_number_integer() || j.get<long long>() <= 0 || j.get<long long>() > (1 << 30))
      bad(key, "expected a positive integer, got " + shown(j));
    return j.get<int>();
  }
  std::string str(const json& obj, const std::string& name, const std::string& prefix = "") const {
    const std::string key = prefix + name;
    const json& j = get(obj, name, key);
    if (!j.is_string()) bad(key, "expected a string, got " + shown(j));
    return j.get<std::string>();
  }
  std::array<float, 3> float3(const json& obj, const std::string& name, bool positive) const {
    const json& j = get(obj, name, name);
    if (!j.is_array() || j.size() != 3) bad(name, "expected an array of 3 numbers, got " + shown(j));
    std::array<float, 3> out{};
    for (int i = 0; i < 3; ++i) {
      if (!j[i].is_number()) bad(name, "expected an array of 3 numbers, got " + shown(j));
      out[i] = j[i].get<float>();
      if (positive && !(out[i] > 0)) bad(name, "expected positive values, got " + shown(j));
    }
    return out;
  }
};

bool is_hex64(const std::string& s) {
  if (s.size() != 64) return false;
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

}  // namespace

const std::vector<std::string>& bundle_module_keys() {
  static const std::vector<std::string> keys = {"trunk",    "detector_neck", "interactive_neck", "grounding",
                                                "sam_head", "concept_bank",  "text_encoder"};
  return keys;
}

std::string BundleInfo::module_path(const std::string& key) const {
  auto it = modules.find(key);
  INSTINCT_CHECK(it != modules.end(), "teacher bundle ", dir, ": module '", key,
                 "' is not listed in bundle.json (listed: ", [&] {
                   std::vector<std::string> k;
                   for (auto& kv : modules) k.push_back(kv.first);
                   return join(k);
                 }(), ")");
  return (fs::path(dir) / it->second.first).string();
}

int BundleInfo::concept_id(const std::string& n) const {
  for (size_t i = 0; i < concepts.size(); ++i)
    if (concepts[i] == n) return static_cast<int>(i);
  return -1;
}

BundleInfo read_bundle_info(const std::string& dir) {
  const std::string file = (fs::path(dir) / "bundle.json").string();
  std::ifstream in(file);
  INSTINCT_CHECK(in.is_open(), "teacher bundle ", dir, ": missing file ", file);
  json root;
  try {
    root = json::parse(in);
  } catch (const json::exception& e) {
    fail("bundle.json ", file, ": not valid JSON: ", e.what());
  }
  JsonFields f{file};
  if (!root.is_object()) fail("bundle.json ", file, ": expected a JSON object at the top level");
  if (f.str(root, "format") != "instinct-teacher-bundle")
    f.bad("format", "expected \"instinct-teacher-bundle\", got " + shown(root["format"]));
  const json& ver = f.get(root, "version", "version");
  if (!ver.is_number_integer() || (ver.get<int>() != 1 && ver.get<int>() != 2))
    f.bad("version", "expected 1 or 2, got " + shown(ver));

  BundleInfo b;
  b.dir = dir;
  b.version = ver.get<int>();
  b.name = f.str(root, "name");
  b.image_size = f.pos_int(root, "image_size");
  b.resize = f.str(root, "resize");
  if (b.resize != "squash" && b.resize != "longest_pad")
    f.bad("resize", "expected \"squash\" or \"longest_pad\", got \"" + b.resize + "\"");
  b.pixel_mean = f.float3(root, "pixel_mean", false);
  b.pixel_std = f.float3(root, "pixel_std", true);
  const json& trunk = f.get(root, "trunk", "trunk");
  if (!trunk.is_object()) f.bad("trunk", "expected an object with channels, grid, patch");
  b.trunk_channels = f.pos_int(trunk, "channels", "trunk.");
  b.trunk_grid = f.pos_int(trunk, "grid", "trunk.");
  b.patch = f.pos_int(trunk, "patch", "trunk.");
  b.neck_channels = f.pos_int(root, "neck_channels");
  b.num_queries = f.pos_int(root, "num_queries");
  b.mask_size = f.pos_int(root, "mask_size");
  b.prompt_length = f.pos_int(root, "prompt_length");
  if (b.trunk_grid * b.patch != b.image_size)
    f.bad("trunk.grid", "expected trunk.grid * trunk.patch == image_size (" + std::to_string(b.image_size) +
                            "), got " + std::to_string(b.trunk_grid) + " * " + std::to_string(b.patch));
  if (b.mask_size != 4 * b.trunk_grid)
    f.bad("mask_size", "expected 4 * trunk.grid = " + std::to_string(4 * b.trunk_grid) + ", got " +
                           std::to_string(b.mask_size));
  if (b.neck_channels % 8 != 0)
    f.bad("neck_channels", "expected a multiple of 8, got " + std::to_string(b.neck_channels));

  const json concepts = root.value("concepts", json::array());
  if (!concepts.is_array()) f.bad("concepts", "expected an array of strings");
  for (size_t i = 0; i < concepts.size(); ++i) {
    if (!concepts[i].is_string()) f.bad("concepts[" + std::to_string(i) + "]", "expected a string, got " + shown(concepts[i]));
    b.concepts.push_back(concepts[i].get<std::string>());
  }
  if (b.version >= 2 && root.contains("sam_head")) {
    const json& sh = root["sam_head"];
    if (!sh.is_object()) f.bad("sam_head", "expected an object");
    b.sam_head.mask_tokens = f.pos_int(sh, "mask_tokens", "sam_head.");
    if (b.sam_head.mask_tokens != 3 && b.sam_head.mask_tokens != 4)
      f.bad("sam_head.mask_tokens", "expected 3 or 4, got " + std::to_string(b.sam_head.mask_tokens));
    if (sh.contains("padding_point") && f.str(sh, "padding_point", "sam_head.") != "appended")
      f.bad("sam_head.padding_point", "expected \"appended\" (the module adds SAM's not-a-point itself), got " +
                                          shown(sh["padding_point"]));
    auto num = [&](const char* name, float& out, float lo, float hi) {
      if (!sh.contains(name)) return;
      const json& j = sh[name];
      if (!j.is_number() || j.get<double>() < lo || j.get<double>() > hi)
        f.bad(std::string("sam_head.") + name, "expected a number in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got " + shown(j));
      out = j.get<float>();
    };
    num("stability_delta", b.sam_head.stability_delta, 0.f, 1e3f);
    num("stability_thresh", b.sam_head.stability_thresh, 0.f, 1.f);
    num("mask_threshold", b.sam_head.mask_threshold, -1e3f, 1e3f);
    if (sh.contains("fill_hole_area")) {
      const json& j = sh["fill_hole_area"];
      if (!j.is_number_integer() || j.get<long long>() < 0 || j.get<long long>() > (1 << 30))
        f.bad("sam_head.fill_hole_area", "expected a non-negative integer, got " + shown(j));
      b.sam_head.fill_hole_area = j.get<int>();
    }
  }
  if (b.version >= 2 && root.contains("tokenizer")) {
    const json& tk = root["tokenizer"];
    if (!tk.is_object()) f.bad("tokenizer", "expected an object {type, file, sha256, context_length}");
    if (f.str(tk, "type", "tokenizer.") != "clip_bpe") f.bad("tokenizer.type", "expected \"clip_bpe\", got " + shown(tk["type"]));
    b.tokenizer.file = f.str(tk, "file", "tokenizer.");
    if (b.tokenizer.file.empty() || b.tokenizer.file.find('/') != std::string::npos || b.tokenizer.file.find('\\') != std::string::npos)
      f.bad("tokenizer.file", "expected a plain file name inside the bundle directory, got \"" + b.tokenizer.file + "\"");
    b.tokenizer.sha256 = f.str(tk, "sha256", "tokenizer.");
    if (!is_hex64(b.tokenizer.sha256)) f.bad("tokenizer.sha256", "expected 64 lower-case hex characters, got \"" + b.tokenizer.sha256 + "\"");
    b.tokenizer.context_length = f.pos_int(tk, "context_length", "tokenizer.");
    if (b.tokenizer.context_length != b.prompt_length)
      f.bad("tokenizer.context_length", "expected prompt_length = " + std::to_string(b.prompt_length) + ", got " +
                                            std::to_string(b.tokenizer.context_length));
  }

  const json& mods = f.get(root, "modules", "modules");
  if (!mods.is_object() || mods.empty()) f.bad("modules", "expected a non-empty object {key: {file, sha256}}");
  const auto& keys = bundle_module_keys();
  for (auto it = mods.begin(); it != mods.end(); ++it) {
    const std::string key = "modules." + it.key();
    if (std::find(keys.begin(), keys.end(), it.key()) == keys.end())
      f.bad(key, "unknown module (valid: " + join(keys) + ")");
    if (!it->is_object()) f.bad(key, "expected an object {file, sha256}");
    std::string fname = f.str(*it, "file", key + ".");
    if (fname.empty() || fname.find('/') != std::string::npos || fname.find('\\') != std::string::npos)
      f.bad(key + ".file", "expected a plain file name inside the bundle directory, got \"" + fname + "\"");
    std::string sha = f.str(*it, "sha256", key + ".");
    if (!is_hex64(sha)) f.bad(key + ".sha256", "expected 64 lower-case hex characters, got \"" + sha + "\"");
    b.modules[it.key()] = {fname, sha};
    if (it->contains("format")) {
      const std::string fmt = f.str(*it, "format", key + ".");
      if (fmt == "instinct-trunk" && it.key() == "trunk") b.cpp_trunk_modules.insert(it.key());
      else if (fmt != "torchscript")
        f.bad(key + ".format", "expected \"torchscript\"" + std::string(it.key() == "trunk" ? " or \"instinct-trunk\"" : "") +
                                   ", got \"" + fmt + "\"");
    }
  }
  if (b.modules.count("concept_bank") && b.concepts.empty())
    f.bad("concepts", "must not be empty when modules.concept_bank is present");
  // A named file that exists must resolve inside the bundle directory (a symlink may not lead out).
  std::vector<std::pair<std::string, std::string>> named;
  for (const auto& [key, fe] : b.modules) named.emplace_back("modules." + key + ".file", fe.first);
  if (!b.tokenizer.file.empty()) named.emplace_back("tokenizer.file", b.tokenizer.file);
  std::error_code ec;
  const fs::path base = fs::weakly_canonical(fs::absolute(dir, ec), ec);
  for (const auto& [key, name] : named) {
    if (name == "." || name == "..") f.bad(key, "expected a plain file name inside the bundle directory, got \"" + name + "\"");
    const fs::path p = fs::path(dir) / name;
    if (!fs::exists(fs::symlink_status(p, ec))) continue;  // a missing file is reported where it is loaded
    std::error_code ec2;
    const fs::path real = fs::weakly_canonical(fs::absolute(p, ec2), ec2);
    if (ec2) f.bad(key, "\"" + name + "\" cannot be resolved (" + ec2.message() + "); expected a file inside the bundle directory");
    const auto rel = real.lexically_relative(base);
    if (rel.empty() || *rel.begin() == ".." || rel == ".")
      f.bad(key, "\"" + name + "\" resolves to " + real.string() + ", outside the bundle directory " + base.string() +
                     " (through a symlink); expected a file inside it");
  }
  return b;
}

data::PreprocessConfig preprocess_config(const BundleInfo& info, const std::string& resize) {
  data::PreprocessConfig pre;
  pre.image_size = info.image_size;
  pre.resize = resize.empty() ? info.resize : resize;
  pre.mean = info.pixel_mean;
  pre.std = info.pixel_std;
  return pre;
}

}  // namespace instinct::teacher
