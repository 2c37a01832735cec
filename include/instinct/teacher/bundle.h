#pragma once
// Teacher bundle: the frozen SAM3 (or SAM3-shaped reference) teacher as a directory of TorchScript
// modules plus bundle.json. The contract (files, shapes, dtypes, keys) is docs/teacher-bundle.md;
// scripts/make_reference_teacher.py writes a small conforming bundle for tests and demos.
//
//   instinct::teacher::BundleLoadOptions opts;
//   opts.modules = {"trunk", "detector_neck"};
//   auto t = instinct::teacher::TeacherBundle::load(dir, opts);
//   t.to(at::kCUDA);
//   at::Tensor feats = t.trunk(pixels);            // (B, C, G, G)
//
// This header does not include torch/script.h: the TorchScript modules live behind a pimpl.
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <array>
#include <map>
#include <set>
#include <memory>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "instinct/data/image_ops.h"

namespace instinct::teacher {

/// The module keys a bundle may hold, in canonical order.
const std::vector<std::string>& bundle_module_keys();

/// How the SAM head's masks are produced and read (bundle.json `sam_head`, version 2; version 1
/// bundles get the defaults: three multimask outputs, no single-mask output, no hole filling).
struct SamHeadInfo {
  int mask_tokens = 3;             ///< masks per prompt the module returns: 3 (multimask) or 4 (single + 3)
  float stability_delta = 0.05f;   ///< single-mask stability: IoU of logits > +delta vs > -delta
  float stability_thresh = 0.98f;  ///< below it, SAM3 falls back to the best multimask output
  float mask_threshold = 0.0f;     ///< mask logit threshold (SAM3's predictor: 0)
  int fill_hole_area = 0;          ///< fill background holes up to this area (mask-size pixels; SAM3: 256)
};

/// SAM3's CLIP BPE vocabulary shipped in the bundle (version 2, optional).
struct TokenizerInfo {
  std::string file;        ///< plain file name inside the bundle directory ("" = none)
  std::string sha256;      ///< of that file
  int context_length = 0;  ///< token ids per phrase (SOT ... EOT, zero padded) = prompt_length
};

/// Parsed and validated bundle.json (field meanings: docs/teacher-bundle.md).
struct BundleInfo {
  int version = 1;             ///< bundle format version (1 or 2)
  std::string dir;             ///< the bundle directory as given to read_bundle_info()
  std::string name;            ///< free-form name ("sam3", "reference-tiny-seed0", ...)
  int image_size = 0;          ///< S: square network input side in pixels
  std::string resize;          ///< "squash" (SAM3) or "longest_pad"
  std::array<float, 3> pixel_mean{};  ///< applied after scaling pixels to [0,1]
  std::array<float, 3> pixel_std{};   ///< (x/255 - mean) / std
  int trunk_channels = 0;      ///< C
  int trunk_grid = 0;          ///< G = S / patch
  int patch = 0;               ///< P
  int neck_channels = 0;       ///< D
  int num_queries = 0;         ///< Q
  int mask_size = 0;           ///< M = 4 G
  int prompt_length = 0;       ///< L
  std::vector<std::string> concepts;  ///< names behind concept_bank ids, in id order (may be empty without concept_bank)
  SamHeadInfo sam_head;        ///< SAM-head output layout and post-processing rules
  TokenizerInfo tokenizer;     ///< the text encoder's vocabulary, when the bundle ships one
  std::map<std::string, std::pair<std::string, std::string>> modules;  ///< key -> (file, sha256 hex)
  /// Keys whose file is a student trunk file (module entry `"format": "instinct-trunk"`, written by
  /// `instinct-merge bundle`) run by the C++ ViT instead of TorchScript; only `trunk` may be one.
  std::set<std::string> cpp_trunk_modules;

  /// Absolute-or-relative path of module `key`'s file (dir + "/" + file). Throws if not listed.
  std::string module_path(const std::string& key) const;
  /// Index of a concept name in `concepts`, or -1.
  int concept_id(const std::string& name) const;
};

/// Reads and validates DIR/bundle.json. Throws instinct::Error (one line, naming the file and the key)
/// when it is missing, not JSON, has the wrong format/version, misses a key, has a value of the wrong
/// type or range, or violates a cross-field rule (G*P == S, M == 4G, D divisible by 8, sha256 is 64 hex
/// characters, module keys from bundle_module_keys()), or names a file that resolves outside DIR
/// (`..`, an absolute path, or a symlink pointing out). Does not read the module files.
/// Implemented in src/teacher/bundle_info.cpp (no TorchScript, so it can be fuzzed alone).
BundleInfo read_bundle_info(const std::string& dir);

/// The image preprocessing a bundle expects (its input size, resize mode, pixel mean and std);
/// `resize`, when not empty, replaces the bundle's resize mode.
data::PreprocessConfig preprocess_config(const BundleInfo& info, const std::string& resize = "");

/// What TeacherBundle::load() loads and checks.
struct BundleLoadOptions {
  /// Module keys to load (each must be listed in bundle.json).
  std::vector<std::string> modules = {"trunk"};
  /// Compare each loaded file's SHA-256 with bundle.json before deserialising it.
  bool verify_hashes = true;
  /// Run each loaded module once at B=1 on dummy inputs and compare every output shape (and dtype)
  /// with the shapes bundle.json implies. Cheap for the reference teacher; for real SAM3 on CPU the
  /// trunk alone is ~5 TFLOP, so load onto CUDA (`device`) or turn this off.
  bool validate_shapes = true;
  /// Device the modules are loaded onto (and validated on).
  c10::Device device = c10::Device(c10::kCPU);
};

/// A loaded, frozen teacher. Modules are in eval mode and every parameter has requires_grad=false,
/// but gradients still flow through them to their inputs (train a student through frozen heads).
/// Forward methods run under whatever grad mode the caller set. Copies share the same modules.
/// Errors are instinct::Error with one-line messages naming the offending file.
class TeacherBundle {
 public:
  static TeacherBundle load(const std::string& dir, const BundleLoadOptions& opts = {});

  const BundleInfo& info() const;
  /// True when module `key` was loaded.
  bool has(const std::string& key) const;
  /// Number of parameter elements of loaded module `key` (throws if not loaded).
  int64_t num_parameters(const std::string& key) const;
  /// Named parameters of loaded module `key`, as shared handles. Used to fine-tune a separately
  /// loaded copy (set requires_grad and update in place); the modules stay frozen otherwise.
  std::vector<std::pair<std::string, at::Tensor>> named_parameters(const std::string& key) const;
  /// Writes loaded module `key` as TorchScript to `path` atomically (e.g. a fine-tuned neck that
  /// replaces the bundle's file). `replace` swaps existing tensor attributes (buffers) of the module
  /// for new tensors in the written copy only (a rebuilt concept-bank table); an attribute the module
  /// does not have is an error naming it.
  void save_module(const std::string& key, const std::string& path,
                   const std::vector<std::pair<std::string, at::Tensor>>& replace = {}) const;
  /// Moves every loaded module to `device` (inputs must then live there too). TorchScript modules are
  /// re-loaded from their files onto `device` (constants captured at trace time, such as SAM3's
  /// decoder caches, only follow the load device), so parameter handles taken earlier are stale and
  /// in-memory changes are dropped: prefer BundleLoadOptions::device.
  void to(const at::Device& device);

  /// pixels (B,3,S,S) float, normalised -> feats (B,C,G,G), raw residual stream.
  at::Tensor trunk(const at::Tensor& pixels) const;
  /// feats -> fpn0 (B,D,4G,4G), fpn1 (B,D,2G,2G), fpn2 (B,D,G,G).
  std::tuple<at::Tensor, at::Tensor, at::Tensor> detector_neck(const at::Tensor& feats) const;
  /// feats -> emb (B,D,G,G), s0 (B,D/8,4G,4G), s1 (B,D/4,2G,2G).
  std::tuple<at::Tensor, at::Tensor, at::Tensor> interactive_neck(const at::Tensor& feats) const;

  struct Grounding {
    at::Tensor logits;    ///< (B,Q,1) class logits
    at::Tensor boxes;     ///< (B,Q,4) cxcywh in [0,1] of the network input
    at::Tensor masks;     ///< (B,Q,M,M) mask logits
    at::Tensor presence;  ///< (B,1) presence logit
    at::Tensor memory;    ///< (G*G,B,D) fusion-encoder output, sequence-first (CLoCK target)
    at::Tensor queries;   ///< (B,Q,D) final decoder queries
  };
  /// text (B,L,D) float, text_pad (B,L) bool with true = padding.
  Grounding grounding(const at::Tensor& fpn0, const at::Tensor& fpn1, const at::Tensor& fpn2,
                      const at::Tensor& text, const at::Tensor& text_pad) const;

  struct SamOut {
    at::Tensor masks;         ///< (B,3,M,M) mask logits (multimask outputs)
    at::Tensor iou;           ///< (B,3) predicted IoU in [0,1]
    at::Tensor obj;           ///< (B,1) object-score logit
    at::Tensor single_masks;  ///< (B,M,M) the single-mask output (undefined unless sam_head.mask_tokens == 4)
    at::Tensor single_iou;    ///< (B,) its predicted IoU (undefined unless mask_tokens == 4)
  };
  /// points (B,N,2) float in network-input pixel coordinates; labels (B,N) int64:
  /// 1 positive, 0 negative, 2/3 box top-left/bottom-right. Pass only real prompts: a SAM3 export
  /// appends SAM's one not-a-point itself (docs/teacher-bundle.md, "Prompt rules").
  SamOut sam_head(const at::Tensor& emb, const at::Tensor& s0, const at::Tensor& s1,
                  const at::Tensor& points, const at::Tensor& labels) const;

  /// ids (B,) int64 indices into info().concepts -> text (B,L,D) float, text_pad (B,L) bool.
  std::pair<at::Tensor, at::Tensor> concepts(const at::Tensor& ids) const;
  /// token ids (B,L) int64 (SOT ... EOT, zero padded) -> text (B,L,D) float, text_pad (B,L) bool:
  /// any phrase, not only the concept bank's (module `text_encoder`, version 2).
  std::pair<at::Tensor, at::Tensor> text_encoder(const at::Tensor& token_ids) const;

  struct Impl;  ///< defined in bundle.cpp

 private:
  explicit TeacherBundle(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<Impl> impl_;
};

}  // namespace instinct::teacher
