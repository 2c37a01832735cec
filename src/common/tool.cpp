#include "instinct/common/tool.h"

#include <c10/util/Exception.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cstdlib>
#include <iostream>

#include "instinct/common/error.h"

namespace instinct::tool {

void ensure_passive_omp(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY")) return;
  setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
  execv("/proc/self/exe", argv);  // returns only on failure: carry on with the default policy
}

void init_logging() { spdlog::set_pattern("[%Y-%m-%d %H:%M:%S] [%^%l%$] %v"); }

int run_guarded(const std::function<int()>& body, const std::string& tool) {
  auto report = [&](bool internal, const std::string& msg) {
    if (tool.empty()) spdlog::error("{}{}", internal ? "internal error: " : "", msg);
    else std::cerr << tool << (internal ? ": internal error: " : ": error: ") << msg << "\n";
  };
  try {
    return body();
  } catch (const Error& e) {
    report(false, e.what());
    return 2;
  } catch (const c10::Error& e) {
    report(true, std::string("torch: ") + e.what_without_backtrace());
    return 3;
  } catch (const std::exception& e) {
    report(true, e.what());
    return 3;
  }
}

}  // namespace instinct::tool
