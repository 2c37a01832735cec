// instinct-train: distil SAM3's vision trunk into a ViT student. A thin CLI over instinct_core.
#include <CLI/CLI.hpp>

#include "instinct/common/tool.h"
#include "instinct/distill/concept.h"
#include "instinct/distill/stage_a.h"

int main(int argc, char** argv) {
  instinct::tool::ensure_passive_omp(argv);
  CLI::App app{"instinct-train: distil SAM3's vision trunk into a small student (see README.md)"};
  app.require_subcommand(1);
  std::string config_path;
  std::vector<std::string> overrides;
  bool print_config = false;
  auto* stage_a = app.add_subcommand("stageA", "Stage A: distil the teacher trunk's features into the student trunk");
  stage_a->add_option("--config,-c", config_path, "YAML config (configs/stageA_*.yaml); defaults if omitted");
  stage_a->add_flag("--print-config", print_config, "print the fully resolved config (with docs) and exit");
  stage_a->add_option("overrides", overrides, "key.sub=value overrides, value parsed as YAML (e.g. optim.max_steps=100)");
  stage_a->footer(
      "Examples:\n"
      "  instinct-train stageA --config configs/stageA_vitb_sam3.yaml teacher.bundle=/data/sam3_bundle data.root=/data/sa1b\n"
      "  instinct-train stageA -c configs/stageA_tiny_cpu.yaml optim.max_steps=50 run_dir=runs/try\n"
      "Outputs in run_dir: config.yaml, metrics.jsonl, checkpoints/step_*.pt + best.pt, trunk.pt (InstinctSAM format).\n"
      "Re-running the same command resumes from the latest checkpoint; SIGINT/SIGTERM checkpoint and exit (130/143).");
  auto* concept = app.add_subcommand(
      "concept", "concept self-distillation: train the trunk end to end through the teacher's frozen neck and grounding");
  concept->add_option("--config,-c", config_path, "YAML config (configs/concept_*.yaml); defaults if omitted");
  concept->add_flag("--print-config", print_config, "print the fully resolved config (with docs) and exit");
  concept->add_option("overrides", overrides, "key.sub=value overrides, value parsed as YAML (e.g. loss.w_memory=0)");
  concept->footer(
      "Examples:\n"
      "  instinct-train concept -c configs/concept_vitb_sam3.yaml teacher.bundle=/data/sam3_bundle \\\n"
      "      init.path=runs/vitb_stageA/trunk.pt data.root=/data/sa1b\n"
      "  instinct-train concept -c configs/concept_tiny_cpu.yaml optim.max_steps=20 run_dir=runs/try\n"
      "Outputs in run_dir: config.yaml, metrics.jsonl, checkpoints/step_*.pt + best.pt, trunk.pt and trunk_ema.pt.\n"
      "No ground truth is read: the teacher supplies every target (docs/concept.md).");
  CLI11_PARSE(app, argc, argv);
  instinct::tool::init_logging();
  if (concept->parsed())
    return instinct::tool::load_and_run<instinct::distill::ConceptConfig>(config_path, overrides, print_config,
                                                                          instinct::distill::run_concept);
  return instinct::tool::load_and_run<instinct::distill::StageAConfig>(config_path, overrides, print_config,
                                                                       instinct::distill::run_stage_a);
}
