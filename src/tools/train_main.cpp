// instinct-train: distil SAM3's vision trunk into a ViT student. A thin CLI over instinct_core.
#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <unistd.h>

#include <cstdlib>
#include <iostream>

#include "instinct/common/error.h"
#include "instinct/config/config.h"
#include "instinct/distill/stage_a.h"

int main(int argc, char** argv) {
  // libgomp reads OMP_WAIT_POLICY once at start-up; its default (spinning workers) steals the cores
  // OpenBLAS's own threads need, costing 10-65% CPU throughput (docs/performance.md). Re-exec once
  // with PASSIVE unless the user chose a policy.
  if (!std::getenv("OMP_WAIT_POLICY")) {
    setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
    execv("/proc/self/exe", argv);  // only returns on failure: carry on with the default policy
  }
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
      "Re-running the same command resumes from the latest checkpoint; SIGINT/SIGTERM checkpoint and exit.");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  spdlog::set_pattern("[%Y-%m-%d %H:%M:%S] [%^%l%$] %v");
  try {
    if (stage_a->parsed()) {
      instinct::distill::StageAConfig cfg;
      instinct::config::load(config_path, overrides, cfg);
      if (print_config) {
        std::cout << instinct::config::to_yaml(cfg);
        return 0;
      }
      return instinct::distill::run_stage_a(cfg);
    }
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
  return 0;
}
