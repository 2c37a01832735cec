#pragma once
// `instinct-eval`: COCO prompt evaluation (box, point, concept; optionally cgF1) of the teacher and any
// number of students side by side, or of results files written by other tools, with the same targets
// and protocol. See docs/evaluation.md for the protocol, outputs and report format.
#include <string>
#include <vector>

#include "instinct/eval/coco.h"

namespace instinct::eval {

/// Everything `instinct-eval --config FILE` reads.
struct EvalConfig {
  std::string annotations;
  std::string images;
  std::string teacher;
  std::vector<std::string> students;
  std::vector<std::string> predictions;
  std::vector<std::string> prompts{"concept", "box", "point"};
  ProtocolConfig protocol;
  std::string output = "runs/eval";
  int overlays = 0;
  std::string device = "auto";
  int batch_size = 4;
  int workers = 2;
  int threads = 0;
  std::string progress = "auto";
  template <class V>
  void visit(V& v) {
    v("annotations", annotations, "COCO instances json (e.g. instances_val2017.json)");
    v("images", images, "image folder for the json's file_name entries");
    v("teacher", teacher, "teacher bundle directory (also provides the students' heads)");
    v("students", students, "student trunk files: NAME=PATH or PATH");
    v("predictions", predictions, "results files (NAME=PATH or PATH) to score instead of models");
    v("prompts", prompts, "prompt modes: concept, box, point");
    v("protocol", protocol, "");
    v("output", output, "output directory for report.json, report.html and overlays/");
    v("overlays", overlays, "overlay PNGs for the first K evaluated images (needs images)");
    v("device", device, "auto | cpu | cuda | cuda:N");
    v("batch_size", batch_size, "images per trunk forward");
    v("workers", workers, "image decoding threads");
    v("threads", threads, "CPU intra-op threads; 0 = all cores");
    v("progress", progress, "auto | bar | lines | off");
  }
};

/// Runs the evaluation (models, or results files when `predictions` is set), prints the table, writes
/// <output>/report.json, <output>/report.html (atomically; both or neither) and the overlays. Returns
/// the exit code: 0, or 128 + signal when SIGINT/SIGTERM arrives before the report is written, in which
/// case neither report file is written and the overlays written so far are removed.
int run_eval(const EvalConfig& cfg);

}  // namespace instinct::eval
