// instinct-eval: COCO box / point / concept evaluation, teacher beside students. Thin CLI over instinct_core.
#include <CLI/CLI.hpp>

#include "instinct/common/tool.h"
#include "instinct/eval/evaluate.h"

int main(int argc, char** argv) {
  instinct::tool::ensure_passive_omp(argv);
  CLI::App app{"instinct-eval: COCO concept / box / point evaluation of the teacher and students (docs/evaluation.md)"};
  std::string config_path;
  std::vector<std::string> overrides;
  bool print_config = false;
  app.add_option("--config,-c", config_path, "YAML config (configs/eval_*.yaml)");
  app.add_flag("--print-config", print_config, "print the fully resolved config and exit");
  app.add_option("overrides", overrides, "key.sub=value overrides (value parsed as YAML)");
  app.footer(
      "Examples:\n"
      "  instinct-eval -c configs/eval_coco_val2017.yaml teacher=/data/sam3_bundle \"students=[vitb=runs/vitb/trunk.pt]\"\n"
      "  instinct-eval -c configs/eval_toy_cpu.yaml protocol.point=interior protocol.targets=all\n"
      "Prints a table (student as % of teacher) and writes <output>/report.json with per-image rows.");
  CLI11_PARSE(app, argc, argv);
  instinct::tool::init_logging();
  return instinct::tool::load_and_run<instinct::eval::EvalConfig>(config_path, overrides, print_config,
                                                                   instinct::eval::run_eval);
}
