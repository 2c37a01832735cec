#pragma once
// The student trunk: a timm-compatible Vision Transformer plus EfficientSAM3's adapter head.
//
// Module and parameter names follow the Python models exactly so state dicts interchange:
//   StudentTrunk
//   └── model
//       ├── backbone.model   timm VisionTransformer: patch_embed.proj, cls_token, pos_embed,
//       │                    blocks.{i}.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}, norm
//       └── head             0: Conv1x1 (no bias), 1: BatchNorm2d, 2: GELU, 3: Conv3x3 (bias)
// giving InstinctSAM's released keys (`model.backbone.model.blocks.3.attn.qkv.weight`,
// `model.head.1.running_mean`, ...). The forward pass is timm's `forward_features` (final norm
// included), CLS dropped, tokens -> (B,W,g,g), adapter head, then a bilinear (align_corners=false)
// resize to the teacher grid when g differs from it.
#include <torch/nn/module.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>

#include <string>
#include <vector>

namespace instinct::model {

/// Architecture of the student trunk (ViT + adapter head + output resize).
struct VitConfig {
  std::string preset = "vit_base";
  int img_size = 1008;
  int patch = 16;
  int width = 768;
  int depth = 12;
  int heads = 12;
  double mlp_ratio = 4.0;
  double ln_eps = 1e-6;
  int out_channels = 0;
  int out_grid = 0;
  bool grad_checkpointing = false;

  int grid() const { return img_size / patch; }
  template <class V>
  void visit(V& v) {
    v("preset", preset, "vit_base | vit_base_1152 | vit_tiny | vit_small | custom (fields below)");
    v("img_size", img_size, "input resolution (square); must be a multiple of patch");
    v("patch", patch, "patch size");
    v("width", width, "embedding width");
    v("depth", depth, "number of transformer blocks");
    v("heads", heads, "attention heads (width must divide evenly)");
    v("mlp_ratio", mlp_ratio, "MLP hidden = width * mlp_ratio");
    v("ln_eps", ln_eps, "LayerNorm epsilon (timm ViT: 1e-6)");
    v("out_channels", out_channels, "adapter output channels (0 = the teacher's trunk channels)");
    v("out_grid", out_grid, "output grid after resize (0 = the teacher's trunk grid)");
    v("grad_checkpointing", grad_checkpointing, "recompute each block in backward to save activation memory");
  }
};

/// Fills the architecture fields (img_size, patch, width, depth, heads, mlp_ratio, ln_eps) from
/// `cfg.preset` unless it is "custom"; keeps out_channels/out_grid and grad_checkpointing. Presets: vit_base (timm vit_base_patch16_224 at 1008: 63x63 grid),
/// vit_base_1152 (same at 1152: native 72x72, no resize), vit_small, vit_tiny.
/// Throws on an unknown preset (listing the valid ones) or inconsistent fields.
VitConfig resolve_preset(VitConfig cfg);

/// timm's PatchEmbed: a strided conv `proj`.
struct PatchEmbedImpl : torch::nn::Module {
  PatchEmbedImpl(int patch, int width);
  torch::Tensor forward(const torch::Tensor& x);  ///< (B,3,H,W) -> (B,N,width)
  torch::nn::Conv2d proj{nullptr};
};
TORCH_MODULE(PatchEmbed);

/// timm Attention: fused qkv projection, scaled dot-product attention, output projection.
struct AttentionImpl : torch::nn::Module {
  AttentionImpl(int width, int heads);
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::Linear qkv{nullptr}, proj{nullptr};
  int heads;
};
TORCH_MODULE(Attention);

/// timm Mlp: fc1 -> exact GELU -> fc2.
struct MlpImpl : torch::nn::Module {
  MlpImpl(int width, int hidden);
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(Mlp);

/// Pre-norm transformer block.
struct BlockImpl : torch::nn::Module {
  BlockImpl(int width, int heads, int hidden, double eps);
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::LayerNorm norm1{nullptr}, norm2{nullptr};
  Attention attn{nullptr};
  Mlp mlp{nullptr};
};
TORCH_MODULE(Block);

/// timm VisionTransformer (class token, learned absolute position embedding, final norm;
/// no classifier: num_classes=0, global_pool='').
struct VisionTransformerImpl : torch::nn::Module {
  explicit VisionTransformerImpl(const VitConfig& cfg);
  /// (B,3,S,S) -> (B,1+N,width), final norm applied (timm forward_features).
  torch::Tensor forward_features(const torch::Tensor& x);
  PatchEmbed patch_embed{nullptr};
  torch::Tensor cls_token, pos_embed;
  torch::nn::ModuleList blocks{nullptr};
  torch::nn::LayerNorm norm{nullptr};
  bool grad_checkpointing = false;
};
TORCH_MODULE(VisionTransformer);

/// The student trunk with InstinctSAM's key layout (see the file comment).
struct StudentTrunkImpl : torch::nn::Module {
  explicit StudentTrunkImpl(const VitConfig& cfg);
  /// pixels (B,3,S,S), normalised -> features (B,out_channels,out_grid,out_grid).
  torch::Tensor forward(const torch::Tensor& pixels);
  /// forward() of pixels (B,3,S',S') of any size, bilinearly resized to img_size first (how the
  /// trainers, the evaluator and a student-trunk bundle feed it the teacher's input).
  torch::Tensor forward_resized(const torch::Tensor& pixels);
  VisionTransformer vit() const { return vit_; }
  const VitConfig& config() const { return cfg_; }
  /// Train/eval mode; with frozen BatchNorm statistics the adapter's BatchNorm stays in eval mode
  /// (normalises with its running statistics and never updates them) while the rest trains.
  void train(bool on = true) override;
  /// Freezes (or unfreezes) the adapter's BatchNorm running statistics, e.g. for small-batch
  /// fine-tuning, where per-batch statistics are noisy; its affine weights still train.
  void freeze_batchnorm_stats(bool frozen);

 private:
  bool bn_frozen_ = false;
  VitConfig cfg_;
  VisionTransformer vit_{nullptr};
  torch::nn::Sequential head_{nullptr};
};
TORCH_MODULE(StudentTrunk);

/// Re-initialises every parameter the way timm does for a new ViT (trunc-normal 0.02 for Linear
/// weights and pos_embed, zero biases, cls_token ~ N(0, 1e-6), LayerNorm 1/0; patch conv keeps
/// PyTorch's default, as do the head convs; BatchNorm reset) using the current torch generator.
void init_timm(StudentTrunkImpl& trunk);

/// Ordered (name, tensor) list of every parameter and buffer (the module's state dict).
std::vector<std::pair<std::string, torch::Tensor>> state_dict(const torch::nn::Module& m);

/// Copies `sd` into the module strictly: every key must exist with the same shape and every module
/// key must be provided. Errors list the first few missing / unexpected / mismatched keys and name
/// `source` (a file path).
void load_state_dict_strict(torch::nn::Module& m,
                            const std::vector<std::pair<std::string, torch::Tensor>>& sd,
                            const std::string& source);

/// Parameter count (all parameters, trainable or not).
int64_t num_parameters(const torch::nn::Module& m);

}  // namespace instinct::model
