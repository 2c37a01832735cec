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

torch::Tensor resample_pos_embed(const torch::Tensor& pos, GridSize new_size, int64_t num_prefix, GridSize old_size) {
  INSTINCT_CHECK(pos.dim() == 3 && pos.size(0) == 1 && num_prefix >= 0 && pos.size(1) >= num_prefix,
                 "pos_embed must be (1, ", num_prefix, "+N, C), got ", pos.sizes());
  const int64_t n0 = pos.size(1) - num_prefix;
  if (new_size[0] * new_size[1] == n0 && new_size[0] == new_size[1]) return pos;  // timm's early return
  if (old_size[0] == 0) {
    const auto g0 = static_cast<int64_t>(std::llround(std::sqrt(double(n0))));
    INSTINCT_CHECK(g0 * g0 == n0, "pos_embed with ", n0, " grid tokens is not a square grid");
    old_size = {g0, g0};
  }
  INSTINCT_CHECK(old_size[0] * old_size[1] == n0, "pos_embed has ", n0, " grid tokens, not ", old_size[0], "x",
                 old_size[1]);
  const int64_t C = pos.size(2);
  auto grid = pos.narrow(1, num_prefix, n0).to(torch::kFloat).reshape({1, old_size[0], old_size[1], C});
  grid = torch::nn::functional::interpolate(grid.permute({0, 3, 1, 2}),
                                            torch::nn::functional::InterpolateFuncOptions()
                                                .size(std::vector<int64_t>{new_size[0], new_size[1]})
                                                .mode(torch::kBicubic)
                                                .align_corners(false)
                                                .antialias(true));
  grid = grid.permute({0, 2, 3, 1}).reshape({1, new_size[0] * new_size[1], C}).to(pos.dtype());
  return num_prefix ? torch::cat({pos.narrow(1, 0, num_prefix), grid}, 1) : grid;
}

torch::Tensor resample_patch_embed(const torch::Tensor& weight, GridSize new_size) {
  INSTINCT_CHECK(weight.dim() == 4, "patch embedding must be (O, I, h, w), got ", weight.sizes());
  const int64_t oh = weight.size(2), ow = weight.size(3);
  if (oh == new_size[0] && ow == new_size[1]) return weight;
  // Column j of the resize matrix is the j-th basis image resized to the new kernel size.
  auto basis = torch::eye(oh * ow, torch::kFloat).reshape({oh * ow, 1, oh, ow});
  auto resized = torch::nn::functional::interpolate(basis, torch::nn::functional::InterpolateFuncOptions()
                                                               .size(std::vector<int64_t>{new_size[0], new_size[1]})
                                                               .mode(torch::kBicubic)
                                                               .align_corners(false)
                                                               .antialias(true));
  auto resize = resized.squeeze(1).permute({1, 2, 0}).reshape({new_size[0] * new_size[1], oh * ow});
  auto pinv = at::linalg_pinv(resize);  // (old, new)
  auto w = weight.to(torch::kFloat).reshape({weight.size(0), weight.size(1), oh * ow}).matmul(pinv);
  return w.reshape({weight.size(0), weight.size(1), new_size[0], new_size[1]}).to(weight.dtype());
}

void load_timm_vit(StudentTrunkImpl& trunk, const std::string& path) {
  const VitConfig& cfg = trunk.config();
  const int64_t g = cfg.grid();
  auto raw = read_state_dict(path, {"model", "state_dict"});
  std::vector<std::pair<std::string, torch::Tensor>> sd;
  for (auto& kv : raw) {
    std::string k = kv.first;
    for (const char* pre : {"module.", "visual.trunk."})
      if (starts_with(k, pre)) k = k.substr(std::string(pre).size());
    if (starts_with(k, "head.") || starts_with(k, "fc_norm.") || starts_with(k, "pre_logits.") ||
        starts_with(k, "attn_pool."))
      continue;
    INSTINCT_CHECK(k != "reg_token", path, ": reg_token: register tokens are not part of the student ViT; use a "
                   "checkpoint without registers");
    INSTINCT_CHECK(k.find(".ls1.") == std::string::npos && k.find("gamma_") == std::string::npos, path, ": ", k,
                   ": layer scale is not part of the student ViT");
    torch::Tensor v = kv.second;
    if (k == "patch_embed.proj.weight") {
      if (v.dim() < 4) v = v.reshape({cfg.width, -1, cfg.patch, cfg.patch});  // timm's pre-conv layout
      v = resample_patch_embed(v, {cfg.patch, cfg.patch});
    } else if (k == "pos_embed") {
      INSTINCT_CHECK(v.dim() == 3 && v.size(0) == 1, path, ": pos_embed must be (1,N,C), got ", v.sizes());
      if (v.size(1) != 1 + g * g) {
        // timm resamples with the model's prefix count; a checkpoint without a class-token entry
        // (no_embed_class) has a square token count, one with it a square + 1.
        const int64_t n = v.size(1);
        const auto root = static_cast<int64_t>(std::llround(std::sqrt(double(n))));
        const bool no_class_entry = root * root == n;
        v = resample_pos_embed(v, {g, g}, no_class_entry ? 0 : 1);
        if (no_class_entry) v = torch::cat({torch::zeros({1, 1, v.size(2)}, v.options()), v}, 1);
      }
    }
    sd.emplace_back(k, v);
  }
  auto vit = trunk.vit();
  load_state_dict_strict(*vit, sd, path);
}

}  // namespace instinct::model
