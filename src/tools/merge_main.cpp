// instinct-merge: assemble deployable checkpoints (SAM3 + student trunk [+ text encoder]), student
// bundles, trunk format conversion and inspection. Thin CLI over instinct_core (instinct/merge).
#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdio>
#include <iostream>

#include "instinct/common/error.h"
#include "instinct/common/tool.h"
#include "instinct/merge/merge.h"

namespace {
const char* kExamples = R"(
Examples:
  # SAM3 + distilled ViT-B trunk -> one checkpoint for the Python SAM3 / EfficientSAM3 stack
  instinct-merge sam3 --sam3 sam3.pt --trunk runs/vitb_concept/trunk_ema.pt --output sam3_vitb.pt
  # ... also replacing the text encoder by a distilled one, after checking the plan
  instinct-merge sam3 --sam3 sam3.pt --trunk trunk.pt --text mobileclip_s1_text.pt --output out.pt --dry-run
  # a bundle for instinct-eval / instinct-train with the student trunk (and its fine-tuned neck)
  instinct-merge bundle --bundle sam3_bundle --trunk runs/c/trunk.pt --neck runs/c/detector_neck.pt --output student_bundle
  # the concept bank for your own phrases (SAM3 exports carry the text encoder that encodes them)
  instinct-merge vocab --bundle sam3_bundle --vocab my_phrases.txt --output sam3_bundle_mine
  # SAM3's token ids for phrases, as the bundle's text encoder gets them
  instinct-merge tokenize --bundle sam3_bundle "traffic light" "a red fire truck"
  # trunk formats
  instinct-merge convert --input trunk.pt --output trunk.safetensors --format safetensors
  instinct-merge inspect sam3.pt --summary
Exit status: 0 ok, 2 bad input (one line on stderr), 3 internal error.)";
}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"instinct-merge: assemble SAM3 checkpoints with a distilled student trunk, build student bundles, "
               "convert and inspect trunk files (docs/merge.md)"};
  app.footer(kExamples);
  app.require_subcommand(1);
  instinct::merge::Sam3MergeOptions so;
  auto* sam3 = app.add_subcommand("sam3", "merged state dict for the Python stack: SAM3 minus its trunk, plus the student");
  sam3->add_option("--sam3", so.sam3, "SAM3 checkpoint (sam3.pt: flat or {'model': ...})")->required();
  sam3->add_option("--trunk", so.trunk, "student trunk (InstinctSAM file, trunk.pt, checkpoint, .safetensors)")->required();
  sam3->add_option("--text", so.text, "text-encoder state dict replacing the language backbone (encoder.*, projector.*)");
  sam3->add_option("--text-prefix", so.text_prefix, "where SAM3's text encoder keys live")->capture_default_str();
  sam3->add_option("--output,-o", so.output, "merged checkpoint to write");
  sam3->add_option("--manifest", so.manifest, "manifest JSON (default: OUTPUT.manifest.json)");
  sam3->add_option("--allow", so.allow, "key prefix whose missing/unexpected keys are tolerated (repeatable)")
      ->expected(1)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  sam3->add_flag("--dry-run", so.dry_run, "print the plan, write nothing");

  instinct::merge::BundleMergeOptions bo;
  auto* bundle = app.add_subcommand("bundle", "teacher bundle with its trunk (and optionally detector neck) replaced");
  bundle->add_option("--bundle", bo.bundle, "teacher bundle directory")->required();
  bundle->add_option("--trunk", bo.trunk, "student trunk file")->required();
  bundle->add_option("--neck", bo.neck, "TorchScript detector neck replacing detector_neck.pt (concept train_neck)");
  bundle->add_option("--output,-o", bo.output, "new bundle directory");
  bundle->add_flag("--dry-run", bo.dry_run, "print the plan, write nothing");

  instinct::merge::VocabOptions vo;
  auto* vocab = app.add_subcommand("vocab", "bundle copy whose concept bank holds another vocabulary (new phrases "
                                            "through the bundle's text encoder)");
  vocab->add_option("--bundle", vo.bundle, "teacher bundle directory")->required();
  vocab->add_option("--vocab", vo.vocab, "phrases, one per line ('#' comments)")->required();
  vocab->add_option("--output,-o", vo.output, "new bundle directory");
  vocab->add_flag("--dry-run", vo.dry_run, "print the plan, write nothing");

  std::string tbundle, tvocab;
  int tcontext = 0;
  std::vector<std::string> tphrases;
  auto* tokenize = app.add_subcommand("tokenize", "SAM3's token ids of phrases (the C++ CLIP BPE tokenizer), one JSON "
                                                  "line per phrase: {\"text\", \"ids\"}");
  tokenize->add_option("--bundle", tbundle, "bundle whose tokenizer vocabulary (and prompt_length) to use");
  tokenize->add_option("--vocab-file", tvocab, "CLIP BPE vocabulary (bpe_simple_vocab_16e6.txt.gz) instead of --bundle");
  tokenize->add_option("--context", tcontext, "ids per phrase (default: the bundle's prompt_length, else 32)");
  tokenize->add_option("phrases", tphrases, "phrases (UTF-8)")->required();

  std::string cin, cout_, cfmt;
  auto* convert = app.add_subcommand("convert", "convert a trunk file between formats (tensors unchanged)");
  convert->add_option("--input,-i", cin, "trunk file (InstinctSAM, checkpoint, bare dict, .safetensors)")->required();
  convert->add_option("--output,-o", cout_, "file to write")->required();
  convert->add_option("--format,-f", cfmt, "instinctsam | native | safetensors")->required();

  std::string ipath;
  bool isummary = false;
  auto* insp = app.add_subcommand("inspect", "keys, dtypes, shapes, bytes and detected format (no tensor data read)");
  insp->add_option("file", ipath, "checkpoint file")->required();
  insp->add_flag("--summary", isummary, "totals only, no per-tensor lines");

  CLI11_PARSE(app, argc, argv);
  return instinct::tool::run_guarded([&] {
    const auto t0 = std::chrono::steady_clock::now();
    auto secs = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
    if (*sam3) {
      auto sum = instinct::merge::merge_sam3(so);
      std::cout << (so.dry_run ? "plan (dry run, nothing written): " : "merged: ") << so.sam3 << " + " << so.trunk
                << (so.text.empty() ? "" : " + " + so.text) << (so.dry_run ? "" : " -> " + so.output) << "\n";
      for (const auto& l : sum.lines()) std::cout << "  " << l << "\n";
      if (!so.dry_run)
        std::cout << "  manifest: " << (so.manifest.empty() ? so.output + ".manifest.json" : so.manifest) << "\n";
      std::printf("  %.1f s\n", secs());
    } else if (*bundle) {
      auto lines = instinct::merge::merge_bundle(bo);
      std::cout << (bo.dry_run ? "plan (dry run, nothing written): " : "bundle: ") << bo.bundle
                << (bo.dry_run ? "" : " -> " + bo.output) << "\n";
      for (const auto& l : lines) std::cout << "  " << l << "\n";
    } else if (*vocab) {
      auto lines = instinct::merge::rebuild_vocabulary(vo);
      std::cout << (vo.dry_run ? "plan (dry run, nothing written): " : "bundle: ") << vo.bundle
                << (vo.dry_run ? "" : " -> " + vo.output) << "\n";
      for (const auto& l : lines) std::cout << "  " << l << "\n";
    } else if (*tokenize) {
      for (const auto& l : instinct::merge::tokenize_phrases(tbundle, tvocab, tcontext, tphrases)) std::cout << l << "\n";
    } else if (*convert) {
      instinct::merge::convert_trunk(cin, cout_, cfmt);
      std::cout << "converted: " << cin << " -> " << cout_ << " (" << cfmt << ")\n";
    } else if (*insp) {
      for (const auto& l : instinct::merge::inspect(ipath, isummary)) std::cout << l << "\n";
    }
    return 0;
  }, "instinct-merge");
}
