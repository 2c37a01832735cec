#pragma once
// Prompt tokens for concept phrases: the grounding module's `text` / `text_pad` inputs for any list
// of phrases. A phrase in the bundle's concept bank comes from the bank (the exact tensors the bank
// was built with); any other phrase goes through the bundle's text encoder (version-2 bundles from
// scripts/export_sam3.py: `text_encoder` module + the CLIP BPE vocabulary named by `tokenizer`),
// tokenized in C++ exactly as SAM3 does (instinct/text/tokenizer.h). This is what lets instinct-eval
// and instinct-train concept prompt phrases that are not in the bank, and instinct-merge rebuild a
// bank from C++.
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <string>
#include <vector>

#include "instinct/teacher/bundle.h"

namespace instinct::teacher {

/// Prompt tokens of a list of phrases, row k for phrases[k].
struct PhraseTable {
  std::vector<std::string> phrases;  ///< in row order
  at::Tensor text;                   ///< (K,L,D) float, on the bundle's device
  at::Tensor pad;                    ///< (K,L) bool, true = padding
  int64_t from_bank = 0;             ///< rows taken from the concept bank
  int64_t from_encoder = 0;          ///< rows computed by the text encoder
};

/// Reads a vocabulary file: one phrase per line, surrounding whitespace stripped, blank lines and
/// '#' comments skipped. Throws naming the file (and line) when it is missing, empty or repeats a phrase.
std::vector<std::string> read_vocabulary(const std::string& path);

/// The bundle modules encode_phrases() can use that `info` lists (concept_bank, text_encoder): add
/// them to BundleLoadOptions::modules.
std::vector<std::string> phrase_modules(const BundleInfo& info);

/// True when `phrase` can be encoded with what `bundle` has loaded (in its bank, or a text encoder).
bool can_encode(const TeacherBundle& bundle, const std::string& phrase);

/// Encodes `phrases` on `device` (where the bundle's modules are), without gradients. Phrases in the
/// loaded concept bank come from it; the others need a loaded text_encoder and the bundle's tokenizer
/// file (its sha256 is checked). Throws instinct::Error naming `what` (e.g. "protocol: category")
/// and the first phrase that cannot be encoded, and why.
PhraseTable encode_phrases(const TeacherBundle& bundle, const std::vector<std::string>& phrases,
                           const c10::Device& device, const std::string& what);

/// Writes a copy of the bundle's `concept_bank.pt` whose table holds `table` (phrases in row order)
/// to `path`, atomically. Needs a concept bank whose TorchScript module keeps its table in the
/// buffers `text` and `pad` (scripts/export_sam3.py's); throws naming the file otherwise.
void save_concept_bank(const TeacherBundle& bundle, const PhraseTable& table, const std::string& path);

}  // namespace instinct::teacher
