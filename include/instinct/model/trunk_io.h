#pragma once
// Reading and writing student trunk weights in the formats users exchange:
//  - InstinctSAM's trunk file: torch.save dict {'trunk': state_dict, 'backbone': 'vit_base',
//    'model_name': 'base'} with keys `model.backbone.model.*` and `model.head.{0,1,3}.*`;
//  - our training checkpoints (a superset: the same 'trunk' key plus optimizer/EMA/progress);
//  - a bare state dict (plain dict of tensors) or a .safetensors file with the same keys;
//  - ImageNet timm ViT weights (keys without the `model.backbone.model.` prefix) for initialisation.
// Everything written loads in Python with torch.load(path, weights_only=True).
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
/// optional "model"/"state_dict" wrapper and a `module.` prefix are accepted). The classifier
/// (`head.*`, `fc_norm.*`) is ignored; pos_embed is resampled bicubic with antialias (timm's
/// resample_abs_pos_embed, used by its pretrained loading at another img_size) from its square grid
/// to the student grid; the adapter head keeps its initialisation. Every other ViT
/// key must be present with the right shape.
void load_timm_vit(StudentTrunkImpl& trunk, const std::string& path);

/// Resamples a (1, extra+g0*g0, C) position embedding to (1, extra+g1*g1, C), keeping the first
/// `extra` (class) tokens.
torch::Tensor resample_pos_embed(const torch::Tensor& pos, int g1, int extra = 1);

}  // namespace instinct::model
