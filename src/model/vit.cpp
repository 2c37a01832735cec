#include "instinct/model/vit.h"

#include <torch/torch.h>

#include <cmath>
#include <map>

#include "instinct/common/error.h"
#include "common/tensor_ops.h"
#include "compat.h"

namespace instinct::model {
namespace F = torch::nn::functional;

VitConfig resolve_preset(VitConfig c) {
  struct Arch { int img, patch, width, depth, heads; double mlp; };
  static const std::map<std::string, Arch> presets = {
      {"vit_base", {1008, 16, 768, 12, 12, 4.0}},
      {"vit_base_1152", {1152, 16, 768, 12, 12, 4.0}},
      {"vit_small", {1008, 16, 384, 12, 6, 4.0}},
      {"vit_tiny", {1008, 16, 192, 12, 3, 4.0}},
  };
  if (c.preset != "custom") {
    auto it = presets.find(c.preset);
    if (it == presets.end()) {
      std::string valid;
      for (const auto& kv : presets) valid += kv.first + ", ";
      fail("student.preset '", c.preset, "' is unknown; valid: ", valid, "custom");
    }
    const Arch& a = it->second;
    c.img_size = a.img; c.patch = a.patch; c.width = a.width; c.depth = a.depth; c.heads = a.heads;
    c.mlp_ratio = a.mlp; c.ln_eps = 1e-6;
  }
  INSTINCT_CHECK(c.patch > 0 && c.img_size > 0 && c.img_size % c.patch == 0, "student.img_size ",
                 c.img_size, " must be a positive multiple of student.patch ", c.patch);
  INSTINCT_CHECK(c.width > 0 && c.heads > 0 && c.width % c.heads == 0, "student.width ", c.width,
                 " must be divisible by student.heads ", c.heads);
  INSTINCT_CHECK(c.depth > 0 && c.out_channels > 0 && c.out_grid > 0,
                 "student.depth/out_channels/out_grid must be positive");
  return c;
}

PatchEmbedImpl::PatchEmbedImpl(int patch, int width) {
  proj = register_module("proj", torch::nn::Conv2d(torch::nn::Conv2dOptions(3, width, patch).stride(patch)));
}
torch::Tensor PatchEmbedImpl::forward(const torch::Tensor& x) {
  return proj(x).flatten(2).transpose(1, 2);
}

AttentionImpl::AttentionImpl(int width, int heads_) : heads(heads_) {
  qkv = register_module("qkv", torch::nn::Linear(torch::nn::LinearOptions(width, 3 * width).bias(true)));
  proj = register_module("proj", torch::nn::Linear(width, width));
}
torch::Tensor AttentionImpl::forward(const torch::Tensor& x) {
  const auto B = x.size(0), N = x.size(1), C = x.size(2);
  auto t = qkv(x).reshape({B, N, 3, heads, C / heads}).permute({2, 0, 3, 1, 4});
  auto o = compat::sdpa(t[0], t[1], t[2]);
  return proj(o.transpose(1, 2).reshape({B, N, C}));
}

MlpImpl::MlpImpl(int width, int hidden) {
  fc1 = register_module("fc1", torch::nn::Linear(width, hidden));
  fc2 = register_module("fc2", torch::nn::Linear(hidden, width));
}
torch::Tensor MlpImpl::forward(const torch::Tensor& x) { return fc2(torch::gelu(fc1(x))); }

BlockImpl::BlockImpl(int width, int heads, int hidden, double eps) {
  norm1 = register_module("norm1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({width}).eps(eps)));
  attn = register_module("attn", Attention(width, heads));
  norm2 = register_module("norm2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({width}).eps(eps)));
  mlp = register_module("mlp", Mlp(width, hidden));
}
torch::Tensor BlockImpl::forward(const torch::Tensor& x) {
  auto h = x + attn(norm1(x));
  return h + mlp(norm2(h));
}

namespace {
// Reentrant activation checkpointing: forward without saving activations, recompute in backward.
struct CheckpointBlock : torch::autograd::Function<CheckpointBlock> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, torch::Tensor x, int64_t block_ptr,
                               bool autocast) {
    ctx->save_for_backward({x});
    ctx->saved_data["block"] = block_ptr;
    ctx->saved_data["autocast"] = autocast;
    compat::CudaAutocast ac(autocast);
    return reinterpret_cast<BlockImpl*>(block_ptr)->forward(x);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto x = ctx->get_saved_variables()[0].detach().requires_grad_(true);
    auto* block = reinterpret_cast<BlockImpl*>(ctx->saved_data["block"].toInt());
    torch::Tensor y;
    {
      torch::AutoGradMode grad_on(true);
      // The autograd engine runs backward on its own threads, where autocast is off: restore it.
      compat::CudaAutocast ac(ctx->saved_data["autocast"].toBool());
      y = block->forward(x);
    }
    torch::autograd::backward({y}, {grads[0]});
    return {x.grad(), torch::Tensor(), torch::Tensor()};
  }
};
}  // namespace

VisionTransformerImpl::VisionTransformerImpl(const VitConfig& cfg) : grad_checkpointing(cfg.grad_checkpointing) {
  const int n = cfg.grid() * cfg.grid();
  patch_embed = register_module("patch_embed", PatchEmbed(cfg.patch, cfg.width));
  cls_token = register_parameter("cls_token", torch::zeros({1, 1, cfg.width}));
  pos_embed = register_parameter("pos_embed", torch::zeros({1, 1 + n, cfg.width}));
  blocks = register_module("blocks", torch::nn::ModuleList());
  const int hidden = static_cast<int>(cfg.width * cfg.mlp_ratio);
  for (int i = 0; i < cfg.depth; ++i) blocks->push_back(Block(cfg.width, cfg.heads, hidden, cfg.ln_eps));
  norm = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({cfg.width}).eps(cfg.ln_eps)));
}

torch::Tensor VisionTransformerImpl::forward_features(const torch::Tensor& x) {
  auto t = patch_embed(x);
  t = torch::cat({cls_token.expand({t.size(0), -1, -1}), t}, 1) + pos_embed;
  const bool autocast = t.is_cuda() && compat::cuda_autocast_enabled();
  for (const auto& m : *blocks) {
    auto* block = m->as<BlockImpl>();
    if (grad_checkpointing && is_training() && torch::GradMode::is_enabled())
      t = CheckpointBlock::apply(t, reinterpret_cast<int64_t>(block), autocast);
    else
      t = block->forward(t);
  }
  return norm(t);
}

StudentTrunkImpl::StudentTrunkImpl(const VitConfig& cfg) : cfg_(resolve_preset(cfg)) {
  auto model = register_module("model", std::make_shared<torch::nn::Module>());
  auto backbone = model->register_module("backbone", std::make_shared<torch::nn::Module>());
  vit_ = backbone->register_module("model", VisionTransformer(cfg_));
  head_ = model->register_module(
      "head", torch::nn::Sequential(
                  torch::nn::Conv2d(torch::nn::Conv2dOptions(cfg_.width, cfg_.out_channels, 1).bias(false)),
                  torch::nn::BatchNorm2d(cfg_.out_channels), torch::nn::GELU(),
                  torch::nn::Conv2d(torch::nn::Conv2dOptions(cfg_.out_channels, cfg_.out_channels, 3).padding(1))));
  init_timm(*this);
}

torch::Tensor StudentTrunkImpl::forward(const torch::Tensor& pixels) {
  INSTINCT_CHECK(pixels.dim() == 4 && pixels.size(1) == 3 && pixels.size(2) == cfg_.img_size &&
                     pixels.size(3) == cfg_.img_size,
                 "student trunk: expected pixels (B,3,", cfg_.img_size, ",", cfg_.img_size, "), got ",
                 pixels.sizes());
  const int g = cfg_.grid();
  auto t = vit_->forward_features(pixels).narrow(1, 1, g * g);
  auto f = head_->forward(t.transpose(1, 2).reshape({t.size(0), cfg_.width, g, g}));
  return resize_bilinear(f, cfg_.out_grid, cfg_.out_grid);
}

torch::Tensor StudentTrunkImpl::forward_resized(const torch::Tensor& pixels) {
  return forward(resize_bilinear(pixels, cfg_.img_size, cfg_.img_size));
}

void StudentTrunkImpl::train(bool on) {
  torch::nn::Module::train(on);
  if (bn_frozen_)
    for (auto& m : modules())
      if (m->as<torch::nn::BatchNorm2dImpl>()) m->eval();
}

void StudentTrunkImpl::freeze_batchnorm_stats(bool frozen) {
  bn_frozen_ = frozen;
  train(is_training());
}

void init_timm(StudentTrunkImpl& trunk) {
  torch::NoGradGuard ng;
  auto tn = [](torch::Tensor t, double std) {
    // timm trunc_normal_(std, a=-2, b=2): absolute bounds, effectively untruncated for std 0.02.
    t.normal_(0, std).clamp_(-2.0, 2.0);
  };
  auto vit = trunk.vit();
  tn(vit->pos_embed, 0.02);
  vit->cls_token.normal_(0, 1e-6);
  for (auto& m : vit->modules(false)) {
    if (auto* lin = m->as<torch::nn::LinearImpl>()) {
      tn(lin->weight, 0.02);
      if (lin->bias.defined()) lin->bias.zero_();
    } else if (auto* ln = m->as<torch::nn::LayerNormImpl>()) {
      ln->weight.fill_(1);
      ln->bias.zero_();
    }
  }
  for (auto& m : trunk.modules(false)) {
    if (auto* bn = m->as<torch::nn::BatchNorm2dImpl>()) bn->reset_parameters();
  }
}

namespace {
void collect_state(const torch::nn::Module& m, const std::string& prefix,
                   std::vector<std::pair<std::string, torch::Tensor>>& out) {
  for (const auto& p : m.named_parameters(false)) out.emplace_back(prefix + p.key(), p.value());
  for (const auto& b : m.named_buffers(false)) out.emplace_back(prefix + b.key(), b.value());
  for (const auto& c : m.named_children()) collect_state(*c.value(), prefix + c.key() + ".", out);
}
}  // namespace

std::vector<std::pair<std::string, torch::Tensor>> state_dict(const torch::nn::Module& m) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  collect_state(m, "", out);
  return out;
}

void load_state_dict_strict(torch::nn::Module& m, const std::vector<std::pair<std::string, torch::Tensor>>& sd,
                            const std::string& source) {
  auto own = state_dict(m);
  std::map<std::string, torch::Tensor> given;
  std::vector<std::string> dup;
  for (const auto& kv : sd)
    if (!given.emplace(kv.first, kv.second).second) dup.push_back(kv.first);
  INSTINCT_CHECK(dup.empty(), source, ": duplicate key '", dup.empty() ? "" : dup[0], "'");
  std::vector<std::string> missing, mismatch;
  for (const auto& kv : own) {
    auto it = given.find(kv.first);
    if (it == given.end()) missing.push_back(kv.first);
    else if (it->second.sizes() != kv.second.sizes())
      mismatch.push_back(kv.first + " (file " + c10::str(it->second.sizes()) + ", model " +
                         c10::str(kv.second.sizes()) + ")");
  }
  std::vector<std::string> unexpected;
  std::map<std::string, int> own_names;
  for (const auto& kv : own) own_names[kv.first] = 1;
  for (const auto& kv : sd)
    if (!own_names.count(kv.first)) unexpected.push_back(kv.first);
  auto list = [](const std::vector<std::string>& v) {
    std::string s;
    for (size_t i = 0; i < v.size() && i < 3; ++i) s += (i ? ", " : "") + v[i];
    if (v.size() > 3) s += ", ... (" + std::to_string(v.size()) + " in all)";
    return s;
  };
  if (!missing.empty() || !unexpected.empty() || !mismatch.empty()) {
    std::string msg = source + ": state dict does not match the student architecture:";
    if (!mismatch.empty()) msg += " shape mismatch: " + list(mismatch) + ";";
    if (!missing.empty()) msg += " missing: " + list(missing) + ";";
    if (!unexpected.empty()) msg += " unexpected: " + list(unexpected) + ";";
    throw Error(msg);
  }
  torch::NoGradGuard ng;
  for (auto& kv : own) {
    const auto& src = given.at(kv.first);
    kv.second.copy_(src.to(kv.second.dtype()));
  }
}

int64_t num_parameters(const torch::nn::Module& m) {
  int64_t n = 0;
  for (const auto& p : m.parameters()) n += p.numel();
  return n;
}

}  // namespace instinct::model
