#pragma once
// Progress reporting for long runs: a single updating line (step/total, fields, rate, ETA) when
// stderr is a terminal, otherwise a log line every `every` updates (or seconds), so logs from batch
// systems stay readable.
#include <chrono>
#include <string>

namespace instinct {

/// Formats seconds as "1h02m03s" / "2m03s" / "4.1s".
std::string format_duration(double seconds);

class Progress {
 public:
  /// `mode`: "auto" (bar on a TTY, lines otherwise), "bar", "lines" or "off".
  Progress(std::string label, int64_t total, std::string mode = "auto", double line_interval_s = 30);
  /// Reports that `done` of `total` units are complete; `fields` is free text (e.g. "loss 0.31").
  /// `rate_units` is what the rate counts (e.g. images) and `units_done` their running count.
  void update(int64_t done, const std::string& fields, double units_done = -1, const char* rate_units = "it");
  /// Ends the bar line (newline) if one is shown.
  void finish();
  ~Progress();

 private:
  std::string label_, mode_;
  int64_t total_;
  int64_t start_done_ = -1;
  double start_units_ = 0;
  double interval_;
  bool bar_ = false, open_ = false;
  std::chrono::steady_clock::time_point t0_, last_;
};

}  // namespace instinct
