#pragma once
// Reading and writing student trunk weights in the formats users exchange:
//  - InstinctSAM's trunk file: torch.save dict {'trunk': state_dict, 'backbone': 'vit_base',
//    'model_name': 'base'} with keys `model.backbone.model.*` and `model.head.{0,1,3}.*`;
//  - our training checkpoints (a superset: the same 'trunk' key plus optimizer/EMA/progress);
//  - a bare state dict (plain dict of tensors) or a .safetensors file with the same keys;
//  - ImageNet timm ViT weights (keys without the `model.backbone.model.` prefix) for initialisation.
// Everything written loads in Python with torch.load(path, weights_only=True).
#include <array>
#include <string>
#include <utility>
#include <vector>

#include "instinct/model/vit.h"

namespace instinct::model {

/// InstinctSAM's name for a student architecture ("vit_base" for the ViT-B presets).
std::string backbone_name(const VitConfig& cfg);

/// Writes `trunk` as an InstinctSAM trunk file (atomic). `extra` entries are added at top level.
void save_trunk_file(const std::string& path, StudentTrunkImpl& trunk);

/// Reads a name -> tensor dict from a .safetensors file or a torch.save file (plain dicts and raw
/// `state_dict()` OrderedDicts alike): the dict under the first of `wrappers` present, else the
/// top-level dict. Errors name the file and the offending key.
std::vector<std::pair<std::string, torch::Tensor>> read_state_dict(const std::string& path,
                                                                   const std::vector<std::string>& wrappers = {});

/// Reads the trunk state dict from any supported file (see the file comment), in file order.
/// Errors name the file and say which layout was expected.
std::vector<std::pair<std::string, torch::Tensor>> read_trunk_state(const std::string& path);

/// Infers a student architecture from an InstinctSAM-layout state dict: width, depth, patch and input
/// size from the tensors' shapes, heads = width / 64 (timm's ViT-Ti/S/B), out_channels from the head.
VitConfig infer_student_config(const std::vector<std::pair<std::string, torch::Tensor>>& sd, int out_grid);

/// Loads a trunk file strictly into `trunk` (architecture mismatches list the offending keys).
void load_trunk_file(StudentTrunkImpl& trunk, const std::string& path);

/// Initialises the ViT part from ImageNet timm weights (.safetensors or a torch.save dict; an
/// optional "model"/"state_dict" wrapper and a `module.` / `visual.trunk.` prefix are accepted) the
/// way timm's own pretrained loading at another model size does (vision_transformer.py
/// `checkpoint_filter_fn`, checked against timm itself in tests/unit/test_timm_parity.cpp):
///  - classifier parts (`head.*`, `fc_norm.*`, `pre_logits.*`, `attn_pool.*`) are ignored;
///  - pos_embed is resampled with resample_pos_embed from the checkpoint's square grid to the
///    student grid. A checkpoint whose pos_embed has no class-token entry (timm `no_embed_class`,
///    e.g. DeiT-III) gets a zero one: the student then computes exactly what timm's no_embed_class
///    model computes;
///  - a patch embedding with another kernel size (e.g. a /14 or /8 checkpoint) is resampled with
///    resample_patch_embed; a 2-D one (timm's pre-conv layout) is reshaped first.
/// Register tokens (`reg_token`) and layer scale are refused (the student has neither); every other
/// ViT key must be present with the right shape. The adapter head keeps its initialisation.
void load_timm_vit(StudentTrunkImpl& trunk, const std::string& path);

/// Height x width of a token grid.
using GridSize = std::array<int64_t, 2>;

/// timm's resample_abs_pos_embed: a (1, num_prefix + oh*ow, C) position embedding becomes
/// (1, num_prefix + nh*nw, C); the first `num_prefix` (class / register) tokens are kept, the grid is
/// resized bicubic with antialias (align_corners = false) in fp32 and cast back. `old_size` {0,0}
/// means a square old grid. As in timm, an embedding that already has the new token count is
/// returned unchanged when the new grid is square. Throws when the token count does not fit.
torch::Tensor resample_pos_embed(const torch::Tensor& pos, GridSize new_size, int64_t num_prefix = 1,
                                 GridSize old_size = {0, 0});

/// timm's resample_patch_embed (FlexiViT's pseudo-inverse resize): a patch-embedding kernel
/// (O, I, h, w) becomes (O, I, nh, nw) such that, on an input resized by the same factor, the patch
/// embedding is (least-squares) unchanged. fp32 math, cast back to the input dtype.
torch::Tensor resample_patch_embed(const torch::Tensor& weight, GridSize new_size);

}  // namespace instinct::model
