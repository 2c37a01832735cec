// instinct-eval: COCO box / point / concept evaluation, teacher beside students. Thin CLI over instinct_core.
#include <CLI/CLI.hpp>
#include <c10/util/Exception.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cstdlib>
#include <iostream>

#include "instinct/common/error.h"
#include "instinct/config/config.h"
#include "instinct/eval/evaluate.h"

int main(int argc, char** argv) {
  if (!std::getenv("OMP_WAIT_POLICY")) {  // see instinct-train: spinning OpenMP workers starve OpenBLAS
    setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
    execv("/proc/self/exe", argv);
  }
  CLI::App app{"instinct-eval: COCO concept / box / point evaluation of the teacher and students (docs/evaluation.md)"};
  std::string config_path;
  std::vector<std::string> overrides;
  bool print_config = false;
  app.add_option("--config,-c", config_path, "YAML config (configs/eval_*.yaml)");
  app.add_flag("--print-config", print_config, "print the fully resolved config and exit");
  app.add_option("overrides", overrides, "key.sub=value overrides (value parsed as YAML)");
  app.footer(
      "Examples:\n"
      "  instinct-eval -c configs/eval_coco_val2017.yaml teacher=/data/sam3_bundle students=[runs/vitb/trunk.pt]\n"
      "  instinct-eval -c configs/eval_toy_cpu.yaml protocol.point=interior protocol.targets=all\n"
      "Prints a table (student as % of teacher) and writes <output>/report.json with per-image rows.");
  CLI11_PARSE(app, argc, argv);
  spdlog::set_pattern("[%Y-%m-%d %H:%M:%S] [%^%l%$] %v");
  try {
    instinct::eval::EvalConfig cfg;
    instinct::config::load(config_path, overrides, cfg);
    if (print_config) {
      std::cout << instinct::config::to_yaml(cfg);
      return 0;
    }
    return instinct::eval::run_eval(cfg);
  } catch (const instinct::Error& e) {
    spdlog::error("{}", e.what());
    return 2;
  } catch (const c10::Error& e) {
    spdlog::error("torch: {}", e.what_without_backtrace());
    return 3;
  } catch (const std::exception& e) {
    spdlog::error("{}", e.what());
    return 3;
  }
}
