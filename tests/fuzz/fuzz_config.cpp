// config::load (YAML file + key=value overrides) into instinct-eval's EvalConfig, then the dump
// (--print-config) must read back. Input: YAML text, then optionally a line "@@" followed by one
// override per line.
#include "fuzz_common.h"
#include "instinct/config/config.h"
#include "instinct/eval/evaluate.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string in(reinterpret_cast<const char*>(data), size);
  std::string yaml = in;
  std::vector<std::string> overrides;
  const size_t sep = in.find("\n@@\n");
  if (sep != std::string::npos) {
    yaml = in.substr(0, sep);
    size_t p = sep + 4;
    while (p <= in.size()) {
      size_t e = in.find('\n', p);
      if (e == std::string::npos) e = in.size();
      overrides.push_back(in.substr(p, e - p));
      p = e + 1;
    }
  }
  const std::string path = fuzz::write_file("config.yaml", yaml.data(), yaml.size());
  fuzz::guarded([&] {
    instinct::eval::EvalConfig cfg;
    instinct::config::load(path, overrides, cfg);
    const std::string dumped = instinct::config::to_yaml(cfg);
    instinct::eval::EvalConfig again;
    try {
      instinct::config::from_yaml(YAML::Load(dumped), again);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "FUZZ FINDING: --print-config output does not read back: %s\n%s", e.what(), dumped.c_str());
      std::abort();
    }
    if (instinct::config::to_yaml(again) != dumped) {
      std::fprintf(stderr, "FUZZ FINDING: config dump is not stable:\n%s---\n%s", dumped.c_str(),
                   instinct::config::to_yaml(again).c_str());
      std::abort();
    }
    instinct::eval::validate(cfg.protocol);
  });
  return 0;
}
