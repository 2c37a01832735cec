#pragma once
// Assembling deployable checkpoints (the library behind `instinct-merge`).
//
//  - merge_sam3: SAM3's sam3.pt (flat or {"model": ...}) with every tensor under
//    `detector.backbone.vision_backbone.trunk.` removed and the student trunk inserted as
//    `detector.backbone.vision_backbone.trunk.model.{backbone.model.*, head.*}`, optionally the
//    text encoder under `detector.backbone.language_backbone.` replaced; every other tensor is
//    copied byte for byte, one storage record at a time (peak memory ~ the student trunk plus the
//    largest record). Strict: unexpected layouts are errors listing the first offenders.
//  - merge_bundle: a teacher bundle directory with its trunk replaced by a student trunk file
//    (run by the C++ ViT; bundle.json entry "format": "instinct-trunk") and optionally its detector
//    neck replaced (e.g. the train_neck output of `instinct-train concept`).
//  - convert_trunk: trunk files between InstinctSAM's format, our checkpoint layout and safetensors.
//  - inspect: what a checkpoint file holds, without loading tensor data.
// Every output is written atomically; a failed merge leaves nothing behind.
#include <cstdint>
#include <string>
#include <vector>

namespace instinct::merge {

/// Tensor counts and bytes per category of a merge plan.
struct MergeCount {
  int64_t tensors = 0;
  int64_t bytes = 0;
};

/// What a merge did (or, with dry_run, would do).
struct MergeSummary {
  MergeCount kept;      ///< copied unchanged from the SAM3 checkpoint
  MergeCount removed;   ///< teacher trunk tensors dropped
  MergeCount inserted;  ///< student trunk tensors added
  MergeCount replaced;  ///< text-encoder tensors dropped (their replacements count as inserted_text)
  MergeCount inserted_text;
  bool wrapped = false;                 ///< input (and output) is {"model": state_dict, ...}
  std::string student_arch;             ///< e.g. "vit_base (width 768, depth 12, patch 16, 1008 px)"
  std::vector<std::string> waived;      ///< offenders waived by allow prefixes
  /// Human-readable lines (kept/removed/inserted/replaced with counts and bytes).
  std::vector<std::string> lines() const;
};

/// Options of merge_sam3 (one field per CLI flag of `instinct-merge sam3`).
struct Sam3MergeOptions {
  std::string sam3;            ///< SAM3 checkpoint (torch.save zip)
  std::string trunk;           ///< student trunk: InstinctSAM file, our checkpoint/trunk.pt, bare dict or .safetensors
  std::string text;            ///< optional text-encoder state dict replacing the language backbone
  std::string text_prefix = "detector.backbone.language_backbone.";  ///< where the text keys live
  std::string trunk_prefix = "detector.backbone.vision_backbone.trunk.";  ///< SAM3's trunk keys
  std::string output;          ///< merged checkpoint to write
  std::string manifest;        ///< manifest JSON; empty = <output>.manifest.json
  std::vector<std::string> allow;  ///< key prefixes whose missing/unexpected keys are tolerated
  bool dry_run = false;        ///< plan and validate only; write nothing
};

/// Merges (see the file comment). Throws instinct::Error (one line) for unreadable or corrupt
/// inputs, a checkpoint without SAM3's trunk keys, a student trunk whose keys or shapes do not form
/// the architecture its tensors imply or whose output width differs from SAM3's trunk width, a text
/// state dict whose projector width differs from SAM3's text width, duplicate keys, output-key
/// collisions, or an output that cannot be written.
MergeSummary merge_sam3(const Sam3MergeOptions& opts);

/// Options of merge_bundle.
struct BundleMergeOptions {
  std::string bundle;  ///< teacher bundle directory
  std::string trunk;   ///< student trunk file
  std::string neck;    ///< optional TorchScript detector neck (e.g. <concept run>/detector_neck.pt)
  std::string output;  ///< output bundle directory (must not exist, or be a bundle this tool wrote)
  bool dry_run = false;
};

/// `instinct-merge vocab`: a copy of a bundle whose concept bank holds another vocabulary.
struct VocabOptions {
  std::string bundle;  ///< teacher bundle directory (with concept_bank; text_encoder for new phrases)
  std::string vocab;   ///< phrases, one per line (blank lines and lines starting with '#' skipped)
  std::string output;  ///< output bundle directory (must not exist)
  bool dry_run = false;
};

/// Rebuilds the concept bank from C++: phrases already in the bank keep their rows, the others are
/// encoded by the bundle's text encoder (teacher::encode_phrases); every other file is copied byte for
/// byte and bundle.json gets the new `concepts` and hashes. Atomic like merge_bundle. Returns a
/// description line per phrase source and module.
std::vector<std::string> rebuild_vocabulary(const VocabOptions& opts);

/// `instinct-merge tokenize`: one JSON line {"text": phrase, "ids": [...]} per phrase, the ids SAM3's
/// text encoder gets (text::ClipTokenizer::tokenize). The vocabulary comes from `bundle`'s tokenizer
/// entry or `vocab_file`; context 0 = the bundle's prompt_length, else 32.
std::vector<std::string> tokenize_phrases(const std::string& bundle, const std::string& vocab_file, int context,
                                          const std::vector<std::string>& phrases);

/// Writes the student bundle: module files other than trunk (and detector_neck when replaced) copied
/// byte for byte, the student trunk as trunk.pt (InstinctSAM format), bundle.json with the new
/// hashes. The directory appears complete or not at all. Returns a description line per module.
std::vector<std::string> merge_bundle(const BundleMergeOptions& opts);

/// Converts a trunk file to `format`: "instinctsam" ({'trunk', 'backbone', 'model_name'}),
/// "native" (our checkpoint layout with the trunk only: loads as init.from=instinct, not resumable)
/// or "safetensors". Tensors are written unchanged.
void convert_trunk(const std::string& input, const std::string& output, const std::string& format);

/// Describes a checkpoint without reading tensor data: the detected format, then one line per tensor
/// (name, dtype, shape, bytes) unless `summary_only`, then totals per dtype.
std::vector<std::string> inspect(const std::string& path, bool summary_only = false);

}  // namespace instinct::merge
