#include "instinct/teacher/bundle.h"

#include <torch/nn/functional/upsampling.h>
#include <torch/script.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "instinct/common/error.h"
#include "common/tensor_ops.h"
#include "instinct/io/atomic_file.h"
#include "instinct/io/sha256.h"
#include "instinct/model/trunk_io.h"

namespace instinct::teacher {
namespace {

namespace fs = std::filesystem;

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
    if (std::find(keys.begin(), keys.end(), key) == keys.end()) {
      std::ostringstream valid;
      for (const auto& k : keys) valid << (&k == &keys.front() ? "" : ", ") << k;
      fail("teacher bundle ", dir, ": unknown module '", key, "' requested (valid: ", valid.str(), ")");
    }
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
