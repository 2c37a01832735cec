// instinct-eval: COCO box / point / concept evaluation, teacher beside students, or of results files.
// Thin CLI over instinct_core.
#include <CLI/CLI.hpp>

#include "instinct/common/tool.h"
#include "instinct/eval/evaluate.h"

namespace {
// A YAML double-quoted scalar (paths may hold ':', '#', ',', ...).
std::string yaml_quoted(const std::string& s) {
  std::string q = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') q += '\\';
    q += c;
  }
  return q + "\"";
}
}  // namespace

int main(int argc, char** argv) {
  instinct::tool::ensure_passive_omp(argv);
  CLI::App app{"instinct-eval: COCO concept / box / point evaluation of the teacher and students, or of results "
               "files from other tools, on the same targets (docs/evaluation.md)"};
  std::string config_path, annotations, images, teacher, output;
  std::vector<std::string> overrides, predictions, students;
  bool print_config = false;
  app.add_option("--config,-c", config_path, "YAML config (configs/eval_*.yaml)");
  app.add_option("--annotations", annotations, "COCO instances json (same as annotations=...)");
  app.add_option("--predictions", predictions,
                 "results file to score, NAME=PATH or PATH; repeatable (same as predictions=[...])")
      ->expected(1)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  app.add_option("--images", images, "image folder (same as images=...)");
  app.add_option("--teacher", teacher, "teacher bundle directory (same as teacher=...)");
  app.add_option("--student", students, "student trunk file, NAME=PATH or PATH; repeatable (same as students=[...])")
      ->expected(1)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  app.add_option("--output,-o", output, "output directory (same as output=...)");
  app.add_flag("--print-config", print_config, "print the fully resolved config and exit");
  app.add_option("overrides", overrides, "key.sub=value overrides (value parsed as YAML)");
  app.footer(
      "Examples:\n"
      "  instinct-eval -c configs/eval_coco_val2017.yaml teacher=/data/sam3_bundle \"students=[vitb=runs/vitb/trunk.pt]\"\n"
      "  instinct-eval -c configs/eval_toy_cpu.yaml protocol.point=interior protocol.targets=all protocol.cgf1=true\n"
      "  instinct-eval --annotations instances_val2017.json --predictions sam3=sam3_results.json --output runs/files\n"
      "Prints a table (each model as % of the first: the teacher, or the first results file) and writes\n"
      "<output>/report.json with per-image rows, <output>/report.html (the same report as one self-contained\n"
      "page: table, IoU histograms, embedded overlays) and <output>/overlays/*.png with overlays=K.");
  CLI11_PARSE(app, argc, argv);
  // Shortcut options become overrides placed before the positional ones (which therefore win).
  std::vector<std::string> all;
  if (!annotations.empty()) all.push_back("annotations=" + yaml_quoted(annotations));
  if (!images.empty()) all.push_back("images=" + yaml_quoted(images));
  if (!teacher.empty()) all.push_back("teacher=" + yaml_quoted(teacher));
  if (!output.empty()) all.push_back("output=" + yaml_quoted(output));
  for (auto* list : {&predictions, &students}) {
    if (list->empty()) continue;
    std::string v = list == &predictions ? "predictions=[" : "students=[";
    for (size_t i = 0; i < list->size(); ++i) v += (i ? ", " : "") + yaml_quoted((*list)[i]);
    all.push_back(v + "]");
  }
  all.insert(all.end(), overrides.begin(), overrides.end());
  instinct::tool::init_logging();
  return instinct::tool::load_and_run<instinct::eval::EvalConfig>(config_path, all, print_config,
                                                                   instinct::eval::run_eval);
}
