#include "instinct/model/trunk_io.h"

#include <torch/torch.h>

#include <cmath>
#include <map>
#include <set>

#include "instinct/common/error.h"
#include "instinct/io/archive.h"
#include "instinct/io/safetensors.h"
#include "instinct/io/torch_zip.h"

namespace instinct::model {
namespace {
bool ends_with(const std::string& s, const std::string& suf) {
  return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
}
bool starts_with(const std::string& s, const std::string& pre) { return s.compare(0, pre.size(), pre) == 0; }

}  // namespace

std::vector<std::pair<std::string, torch::Tensor>> read_state_dict(const std::string& path,
                                                                   const std::vector<std::string>& wrappers) {
  if (ends_with(path, ".safetensors")) return io::load_safetensors(path);
  io::LazyArchive a(path);  // reads plain dicts and raw state_dict() OrderedDicts alike
  const auto& root = a.root();
  INSTINCT_CHECK(root->is_dict(), path, ": expected a dict at the top level, got a ", root->type_name());
  for (const auto& w : wrappers)
    if (auto v = root->get(w); v && v->is_dict()) return io::load_tensor_dict(a, v, path + " ['" + w + "']");
  return io::load_tensor_dict(a, root, path);
}

std::string backbone_name(const VitConfig& cfg) {
  if (cfg.width == 768 && cfg.depth == 12 && cfg.patch == 16) return "vit_base";
  if (cfg.width == 384 && cfg.depth == 12) return "vit_small";
  if (cfg.width == 192 && cfg.depth == 12) return "vit_tiny";
  return "vit_custom";
}

void save_trunk_file(const std::string& path, StudentTrunkImpl& trunk) {
  c10::impl::GenericDict d(c10::StringType::get(), c10::AnyType::get());
  d.insert("trunk", io::tensor_dict(state_dict(trunk)));
  const std::string bb = backbone_name(trunk.config());
  d.insert("backbone", bb);
  d.insert("model_name", bb.substr(bb.find('_') + 1));
  io::save_object(path, d);
}

std::vector<std::pair<std::string, torch::Tensor>> read_trunk_state(const std::string& path) {
  return read_state_dict(path, {"trunk"});
}

VitConfig infer_student_config(const std::vector<std::pair<std::string, torch::Tensor>>& sd, int out_grid) {
  const std::string vit = "model.backbone.model.";
  at::Tensor patch, pos, head3;
  std::set<int> blocks;
  for (const auto& kv : sd) {
    if (kv.first == vit + "patch_embed.proj.weight") patch = kv.second;
    else if (kv.first == vit + "pos_embed") pos = kv.second;
    else if (kv.first == "model.head.3.weight") head3 = kv.second;
    else if (kv.first.rfind(vit + "blocks.", 0) == 0) blocks.insert(std::stoi(kv.first.substr(vit.size() + 7)));
  }
  INSTINCT_CHECK(patch.defined() && pos.defined() && head3.defined() && !blocks.empty(),
                 "trunk state dict is not in InstinctSAM's ViT layout (model.backbone.model.*, model.head.*)");
  VitConfig c;
  c.preset = "custom";
  c.width = int(patch.size(0));
  c.patch = int(patch.size(2));
  const int grid = int(std::lround(std::sqrt(double(pos.size(1) - 1))));
  c.img_size = grid * c.patch;
  c.depth = int(blocks.size());
  c.heads = std::max(1, c.width / 64);
  c.out_channels = int(head3.size(0));
  c.out_grid = out_grid;
  return c;
}

void load_trunk_file(StudentTrunkImpl& trunk, const std::string& path) {
  load_state_dict_strict(trunk, read_trunk_state(path), path);
}

torch::Tensor resample_pos_embed(const torch::Tensor& pos, int g1, int extra) {
  const int64_t n0 = pos.size(1) - extra;
  const int64_t g0 = static_cast<int64_t>(std::llround(std::sqrt(double(n0))));
  INSTINCT_CHECK(g0 * g0 == n0, "pos_embed with ", n0, " grid tokens is not a square grid");
  if (g0 == g1) return pos;
  const int64_t C = pos.size(2);
  auto grid = pos.narrow(1, extra, n0).reshape({1, g0, g0, C}).permute({0, 3, 1, 2}).to(torch::kFloat);
  grid = torch::nn::functional::interpolate(
      grid, torch::nn::functional::InterpolateFuncOptions()
                .size(std::vector<int64_t>{g1, g1})
                .mode(torch::kBicubic)
                .align_corners(false)
                .antialias(true));  // as timm's resample_abs_pos_embed (its pretrained loading at another size)
  grid = grid.permute({0, 2, 3, 1}).reshape({1, int64_t(g1) * g1, C}).to(pos.dtype());
  return torch::cat({pos.narrow(1, 0, extra), grid}, 1);
}

void load_timm_vit(StudentTrunkImpl& trunk, const std::string& path) {
  auto raw = read_state_dict(path, {"model", "state_dict"});
  std::vector<std::pair<std::string, torch::Tensor>> sd;
  for (auto& kv : raw) {
    std::string k = kv.first;
    if (starts_with(k, "module.")) k = k.substr(7);
    if (starts_with(k, "head.") || starts_with(k, "fc_norm.")) continue;
    if (k == "pos_embed") {
      INSTINCT_CHECK(kv.second.dim() == 3, path, ": pos_embed must be (1,N,C), got ", kv.second.sizes());
      kv.second = resample_pos_embed(kv.second, trunk.config().grid());
    }
    sd.emplace_back(k, kv.second);
  }
  auto vit = trunk.vit();
  load_state_dict_strict(*vit, sd, path);
}

}  // namespace instinct::model
