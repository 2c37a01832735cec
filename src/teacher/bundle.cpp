#include "instinct/teacher/bundle.h"

#include <torch/nn/functional/upsampling.h>
#include <torch/script.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "instinct/common/error.h"
#include "common/tensor_ops.h"
#include "instinct/io/atomic_file.h"
#include "instinct/io/sha256.h"
#include "instinct/model/trunk_io.h"

namespace instinct::teacher {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string join(const std::vector<std::string>& v, const char* sep = ", ") {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? sep : "") + v[i];
  return s;
}


// One informative line out of a (possibly multi-line, backtrace-carrying) torch error message.
std::string brief(const std::exception& e) {
  std::string msg = e.what();
  if (auto* ce = dynamic_cast<const c10::Error*>(&e)) msg = ce->what_without_backtrace();
  // TorchScript interpreter errors put the real cause on the last "...Error: " line.
  for (const char* tag : {"RuntimeError: ", "Error: "}) {
    auto pos = msg.rfind(tag);
    if (pos != std::string::npos) {
      auto end = msg.find('\n', pos);
      return msg.substr(pos, end == std::string::npos ? std::string::npos : end - pos);
    }
  }
  std::istringstream is(msg);
  std::string line;
  while (std::getline(is, line))
    if (line.find_first_not_of(" \t") != std::string::npos) return line;
  return msg;
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
      bad(key, "expected a positive integer, got " + j.dump());
    return j.get<int>();
  }
  std::string str(const json& obj, const std::string& name, const std::string& prefix = "") const {
    const std::string key = prefix + name;
    const json& j = get(obj, name, key);
    if (!j.is_string()) bad(key, "expected a string, got " + j.dump());
    return j.get<std::string>();
  }
  std::array<float, 3> float3(const json& obj, const std::string& name, bool positive) const {
    const json& j = get(obj, name, name);
    if (!j.is_array() || j.size() != 3) bad(name, "expected an array of 3 numbers, got " + j.dump());
    std::array<float, 3> out{};
    for (int i = 0; i < 3; ++i) {
      if (!j[i].is_number()) bad(name, "expected an array of 3 numbers, got " + j.dump());
      out[i] = j[i].get<float>();
      if (positive && !(out[i] > 0)) bad(name, "expected positive values, got " + j.dump());
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

struct OutSpec {
  const char* name;
  std::vector<int64_t> shape;
  bool is_bool = false;
};

// Output names and B=1 shapes implied by bundle.json, per module key.
std::vector<OutSpec> output_specs(const BundleInfo& in, const std::string& key) {
  const int64_t C = in.trunk_channels, G = in.trunk_grid, D = in.neck_channels, Q = in.num_queries,
                M = in.mask_size, L = in.prompt_length;
  if (key == "trunk") return {{"feats", {1, C, G, G}}};
  if (key == "detector_neck")
    return {{"fpn0", {1, D, 4 * G, 4 * G}}, {"fpn1", {1, D, 2 * G, 2 * G}}, {"fpn2", {1, D, G, G}}};
  if (key == "interactive_neck")
    return {{"emb", {1, D, G, G}}, {"s0", {1, D / 8, 4 * G, 4 * G}}, {"s1", {1, D / 4, 2 * G, 2 * G}}};
  if (key == "grounding")
    return {{"logits", {1, Q, 1}}, {"boxes", {1, Q, 4}},   {"masks", {1, Q, M, M}},
            {"presence", {1, 1}},  {"memory", {G * G, 1, D}}, {"queries", {1, Q, D}}};
  const int64_t T = in.sam_head.mask_tokens;
  if (key == "sam_head") return {{"masks", {1, T, M, M}}, {"iou", {1, T}}, {"obj", {1, 1}}};
  if (key == "concept_bank" || key == "text_encoder") return {{"text", {1, L, D}}, {"text_pad", {1, L}, true}};
  INSTINCT_ASSERT(false);
  return {};
}

// Deterministic B=1 dummy inputs for a shape check.
std::vector<c10::IValue> dummy_inputs(const BundleInfo& in, const std::string& key, const c10::Device& dev) {
  const int64_t S = in.image_size, C = in.trunk_channels, G = in.trunk_grid, D = in.neck_channels,
                L = in.prompt_length;
  auto gen = at::detail::createCPUGenerator(0);
  auto rnd = [&](std::vector<int64_t> s) { return at::randn(s, gen, at::kFloat).to(dev); };
  if (key == "trunk") return {rnd({1, 3, S, S}).clamp(-1, 1)};
  if (key == "detector_neck" || key == "interactive_neck") return {rnd({1, C, G, G})};
  if (key == "grounding") {
    auto pad = (at::arange(L, at::kLong) >= std::max<int64_t>(1, L / 2)).unsqueeze(0).to(dev);
    return {rnd({1, D, 4 * G, 4 * G}), rnd({1, D, 2 * G, 2 * G}), rnd({1, D, G, G}), rnd({1, L, D}), pad};
  }
  if (key == "sam_head") {
    auto pts = at::full({1, 1, 2}, double(S) / 2, at::kFloat).to(dev);
    auto labels = at::ones({1, 1}, at::kLong).to(dev);
    return {rnd({1, D, G, G}), rnd({1, D / 8, 4 * G, 4 * G}), rnd({1, D / 4, 2 * G, 2 * G}), pts, labels};
  }
  if (key == "concept_bank") return {at::zeros({1}, at::kLong).to(dev)};
  if (key == "text_encoder") {  // CLIP's start and end tokens, zero padding
    auto ids = at::zeros({1, L}, at::kLong);
    ids[0][0] = 49406;
    if (L > 1) ids[0][1] = 49407;
    return {ids.to(dev)};
  }
  INSTINCT_ASSERT(false);
  return {};
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
    f.bad("format", "expected \"instinct-teacher-bundle\", got " + root["format"].dump());
  const json& ver = f.get(root, "version", "version");
  if (!ver.is_number_integer() || (ver.get<int>() != 1 && ver.get<int>() != 2))
    f.bad("version", "expected 1 or 2, got " + ver.dump());

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
    if (!concepts[i].is_string()) f.bad("concepts[" + std::to_string(i) + "]", "expected a string, got " + concepts[i].dump());
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
                                          sh["padding_point"].dump());
    auto num = [&](const char* name, float& out, float lo, float hi) {
      if (!sh.contains(name)) return;
      const json& j = sh[name];
      if (!j.is_number() || j.get<double>() < lo || j.get<double>() > hi)
        f.bad(std::string("sam_head.") + name, "expected a number in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got " + j.dump());
      out = j.get<float>();
    };
    num("stability_delta", b.sam_head.stability_delta, 0.f, 1e3f);
    num("stability_thresh", b.sam_head.stability_thresh, 0.f, 1.f);
    num("mask_threshold", b.sam_head.mask_threshold, -1e3f, 1e3f);
    if (sh.contains("fill_hole_area")) {
      const json& j = sh["fill_hole_area"];
      if (!j.is_number_integer() || j.get<long long>() < 0 || j.get<long long>() > (1 << 30))
        f.bad("sam_head.fill_hole_area", "expected a non-negative integer, got " + j.dump());
      b.sam_head.fill_hole_area = j.get<int>();
    }
  }
  if (b.version >= 2 && root.contains("tokenizer")) {
    const json& tk = root["tokenizer"];
    if (!tk.is_object()) f.bad("tokenizer", "expected an object {type, file, sha256, context_length}");
    if (f.str(tk, "type", "tokenizer.") != "clip_bpe") f.bad("tokenizer.type", "expected \"clip_bpe\", got " + tk["type"].dump());
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

struct TeacherBundle::Impl {
  BundleInfo info;
  c10::Device device = c10::Device(c10::kCPU);  // where the TorchScript modules were loaded
  std::map<std::string, std::shared_ptr<torch::jit::Module>> mods;
  mutable model::StudentTrunk student{nullptr};  // the trunk when bundle.json marks it "instinct-trunk"

  bool loaded(const std::string& key) const { return mods.count(key) || (key == "trunk" && student); }

  torch::jit::Module& get(const std::string& key) const {
    auto it = mods.find(key);
    INSTINCT_CHECK(it != mods.end(), "teacher bundle ", info.dir, ": module '", key,
                   "' was not loaded (add it to BundleLoadOptions::modules)");
    return *it->second;
  }

  // Runs module `key` and unpacks a Tensor / tuple / list result into exactly `n` tensors.
  std::vector<at::Tensor> run(const std::string& key, std::vector<c10::IValue> inputs, size_t n) const {
    if (key == "trunk" && student) {
      return {student->forward_resized(inputs.at(0).toTensor())};
    }
    auto& m = get(key);
    c10::IValue out;
    try {
      out = m.forward(std::move(inputs));
    } catch (const std::exception& e) {
      fail("teacher module ", info.module_path(key), ": forward failed: ", brief(e));
    }
    std::vector<at::Tensor> ts;
    if (out.isTensor()) {
      ts.push_back(out.toTensor());
    } else if (out.isTuple()) {
      for (const auto& v : out.toTupleRef().elements()) {
        INSTINCT_CHECK(v.isTensor(), "teacher module ", info.module_path(key), ": output is not a tuple of tensors");
        ts.push_back(v.toTensor());
      }
    } else if (out.isTensorList()) {
      for (const at::Tensor& t : out.toTensorVector()) ts.push_back(t);
    } else {
      fail("teacher module ", info.module_path(key), ": expected a tensor or a tuple of tensors, got ", out.tagKind());
    }
    INSTINCT_CHECK(ts.size() == n, "teacher module ", info.module_path(key), ": expected ", n,
                   " outputs, got ", ts.size());
    return ts;
  }

  void validate(const std::string& key, const c10::Device& dev) const {
    const auto specs = output_specs(info, key);
    std::vector<at::Tensor> outs;
    {
      c10::InferenceMode guard;
      outs = run(key, dummy_inputs(info, key, dev), specs.size());
    }
    for (size_t i = 0; i < specs.size(); ++i) {
      const auto& s = specs[i];
      INSTINCT_CHECK(outs[i].sizes() == at::IntArrayRef(s.shape), "teacher module ", info.module_path(key),
                     ": output '", s.name, "' has shape ", shape_str(outs[i].sizes()), " but bundle.json implies ",
                     shape_str(s.shape), " (dummy forward at B=1)");
      const auto want = s.is_bool ? at::kBool : at::kFloat;
      INSTINCT_CHECK(outs[i].scalar_type() == want, "teacher module ", info.module_path(key), ": output '",
                     s.name, "' has dtype ", outs[i].scalar_type(), ", expected ", want);
    }
  }
};

TeacherBundle TeacherBundle::load(const std::string& dir, const BundleLoadOptions& opts) {
  auto impl = std::make_shared<Impl>();
  impl->info = read_bundle_info(dir);
  impl->device = opts.device;
  const auto& keys = bundle_module_keys();
  for (const auto& key : opts.modules) {
    INSTINCT_CHECK(std::find(keys.begin(), keys.end(), key) != keys.end(), "teacher bundle ", dir,
                   ": unknown module '", key, "' requested (valid: ", join(keys), ")");
    if (impl->loaded(key)) continue;
    const std::string path = impl->info.module_path(key);
    INSTINCT_CHECK(fs::is_regular_file(path), "teacher bundle ", dir, ": missing module file ", path);
    if (opts.verify_hashes) {
      const std::string& want = impl->info.modules.at(key).second;
      const std::string got = io::sha256_file(path);
      INSTINCT_CHECK(got == want, "teacher bundle ", dir, ": sha256 mismatch for ", path, ": bundle.json says ",
                     want, ", file has ", got);
    }
    if (impl->info.cpp_trunk_modules.count(key)) {
      auto sd = model::read_trunk_state(path);
      auto cfg = model::infer_student_config(sd, impl->info.trunk_grid);
      INSTINCT_CHECK(cfg.out_channels == impl->info.trunk_channels, "teacher bundle ", dir, ": student trunk ", path,
                     " outputs ", cfg.out_channels, " channels, bundle.json says trunk.channels = ",
                     impl->info.trunk_channels);
      impl->student = model::StudentTrunk(cfg);
      model::load_state_dict_strict(*impl->student, sd, path);
      impl->student->to(opts.device);
      impl->student->eval();
      for (auto& p : impl->student->parameters()) p.requires_grad_(false);
      if (opts.validate_shapes) impl->validate(key, opts.device);
      continue;
    }
    auto m = std::make_shared<torch::jit::Module>();
    try {
      *m = torch::jit::load(path, opts.device);
    } catch (const std::exception& e) {
      fail("teacher bundle ", dir, ": cannot load TorchScript file ", path, ": ", brief(e));
    }
    m->eval();
    for (at::Tensor p : m->parameters()) p.requires_grad_(false);
    impl->mods[key] = std::move(m);
    if (opts.validate_shapes) impl->validate(key, opts.device);
  }
  return TeacherBundle(std::move(impl));
}

const BundleInfo& TeacherBundle::info() const { return impl_->info; }

bool TeacherBundle::has(const std::string& key) const { return impl_->loaded(key); }

void TeacherBundle::to(const at::Device& device) {
  if (impl_->student) impl_->student->to(device);
  if (device == impl_->device) return;
  // Tensor constants captured at trace time (e.g. SAM3's decoder coordinate cache) follow the device
  // a TorchScript file is loaded onto, not Module::to(): re-load each module onto `device`.
  for (auto& kv : impl_->mods) {
    auto m = std::make_shared<torch::jit::Module>();
    try {
      *m = torch::jit::load(impl_->info.module_path(kv.first), device);
    } catch (const std::exception& e) {
      fail("teacher bundle ", impl_->info.dir, ": cannot load TorchScript file ", impl_->info.module_path(kv.first),
           " onto ", device.str(), ": ", brief(e));
    }
    m->eval();
    for (at::Tensor p : m->parameters()) p.requires_grad_(false);
    kv.second = std::move(m);
  }
  impl_->device = device;
}

int64_t TeacherBundle::num_parameters(const std::string& key) const {
  if (key == "trunk" && impl_->student) return model::num_parameters(*impl_->student);
  int64_t n = 0;
  for (const auto& p : impl_->get(key).parameters()) n += p.numel();
  return n;
}

std::vector<std::pair<std::string, at::Tensor>> TeacherBundle::named_parameters(const std::string& key) const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  if (key == "trunk" && impl_->student) {
    for (const auto& p : impl_->student->named_parameters()) out.emplace_back(p.key(), p.value());
    return out;
  }
  for (const auto& p : impl_->get(key).named_parameters()) out.emplace_back(p.name, p.value);
  return out;
}

void TeacherBundle::save_module(const std::string& key, const std::string& path,
                                const std::vector<std::pair<std::string, at::Tensor>>& replace) const {
  INSTINCT_CHECK(!(key == "trunk" && impl_->student && !replace.empty()), "cannot replace tensors of a C++ trunk");
  if (key == "trunk" && impl_->student) return model::save_trunk_file(path, *impl_->student);
  std::ostringstream buf;
  if (replace.empty()) {
    impl_->get(key).save(buf);
  } else {
    torch::jit::Module copy = impl_->get(key).clone();
    for (const auto& [name, t] : replace) {
      INSTINCT_CHECK(copy.hasattr(name) && copy.attr(name).isTensor(), "teacher module ", impl_->info.module_path(key),
                     " has no tensor attribute '", name, "' to replace");
      copy.setattr(name, t);
    }
    copy.save(buf);
  }
  io::write_file_atomic(path, buf.str());
}

at::Tensor TeacherBundle::trunk(const at::Tensor& pixels) const { return impl_->run("trunk", {pixels}, 1)[0]; }

std::tuple<at::Tensor, at::Tensor, at::Tensor> TeacherBundle::detector_neck(const at::Tensor& feats) const {
  auto o = impl_->run("detector_neck", {feats}, 3);
  return {o[0], o[1], o[2]};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> TeacherBundle::interactive_neck(const at::Tensor& feats) const {
  auto o = impl_->run("interactive_neck", {feats}, 3);
  return {o[0], o[1], o[2]};
}

TeacherBundle::Grounding TeacherBundle::grounding(const at::Tensor& fpn0, const at::Tensor& fpn1,
                                                  const at::Tensor& fpn2, const at::Tensor& text,
                                                  const at::Tensor& text_pad) const {
  auto o = impl_->run("grounding", {fpn0, fpn1, fpn2, text, text_pad}, 6);
  return {o[0], o[1], o[2], o[3], o[4], o[5]};
}

TeacherBundle::SamOut TeacherBundle::sam_head(const at::Tensor& emb, const at::Tensor& s0, const at::Tensor& s1,
                                              const at::Tensor& points, const at::Tensor& labels) const {
  auto o = impl_->run("sam_head", {emb, s0, s1, points, labels}, 3);
  if (o[0].size(1) != 4) return {o[0], o[1], o[2], {}, {}};
  using at::indexing::Slice;
  return {o[0].index({Slice(), Slice(1)}), o[1].index({Slice(), Slice(1)}), o[2], o[0].select(1, 0), o[1].select(1, 0)};
}

std::pair<at::Tensor, at::Tensor> TeacherBundle::text_encoder(const at::Tensor& token_ids) const {
  auto o = impl_->run("text_encoder", {token_ids}, 2);
  return {o[0], o[1]};
}

std::pair<at::Tensor, at::Tensor> TeacherBundle::concepts(const at::Tensor& ids) const {
  auto o = impl_->run("concept_bank", {ids}, 2);
  return {o[0], o[1]};
}

}  // namespace instinct::teacher
