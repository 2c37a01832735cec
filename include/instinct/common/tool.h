#pragma once
// Shared plumbing of the command-line tools: OpenMP wait policy, logging format, config loading
// with overrides, and turning exceptions into one-line errors with exit codes
// (0 ok, 2 user error, 3 internal/library error).
#include <functional>
#include <iostream>
#include <string>
#include <vector>

#include "instinct/config/config.h"

namespace instinct::tool {

/// libgomp reads OMP_WAIT_POLICY once at start-up and its default (spinning workers) starves
/// OpenBLAS's threads (docs/performance.md): re-executes the program once with PASSIVE unless the
/// user set a policy. Call first thing in main().
void ensure_passive_omp(char** argv);

/// Sets the log pattern shared by all tools.
void init_logging();

/// Runs `body`; instinct::Error -> one line, exit 2; other exceptions -> one line, exit 3. The line
/// goes to the log (spdlog, the trainers and instinct-eval) or, when `tool` is given, to stderr as
/// "<tool>: error: ..." / "<tool>: internal error: ..." (instinct-merge, instinct-bench).
int run_guarded(const std::function<int()>& body, const std::string& tool = "");

/// Loads config `Cfg` from `path` + overrides, prints it (and returns 0) when `print_config`,
/// otherwise returns fn(cfg). Errors as in run_guarded.
template <class Cfg, class Fn>
int load_and_run(const std::string& path, const std::vector<std::string>& overrides, bool print_config, Fn fn) {
  return run_guarded([&] {
    Cfg cfg;
    config::load(path, overrides, cfg);
    if (print_config) {
      std::cout << config::to_yaml(cfg);
      return 0;
    }
    return fn(cfg);
  });
}

}  // namespace instinct::tool
