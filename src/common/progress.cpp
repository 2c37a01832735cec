#include "common/progress.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cstdio>

namespace instinct {

std::string format_duration(double s) {
  char buf[64];
  if (s < 0 || s != s) return "?";
  if (s < 60) std::snprintf(buf, sizeof buf, "%.1fs", s);
  else if (s < 3600) std::snprintf(buf, sizeof buf, "%dm%02ds", int(s) / 60, int(s) % 60);
  else std::snprintf(buf, sizeof buf, "%dh%02dm%02ds", int(s) / 3600, (int(s) / 60) % 60, int(s) % 60);
  return buf;
}

Progress::Progress(std::string label, int64_t total, std::string mode, double interval)
    : label_(std::move(label)), mode_(std::move(mode)), total_(total), interval_(interval) {
  bar_ = mode_ == "bar" || (mode_ == "auto" && isatty(fileno(stderr)));
  t0_ = last_ = std::chrono::steady_clock::now();
}

void Progress::update(int64_t done, const std::string& fields, double units, const char* rate_units) {
  if (mode_ == "off") return;
  const auto now = std::chrono::steady_clock::now();
  if (start_done_ < 0) { start_done_ = done; start_units_ = units; t0_ = now; }
  const double el = std::chrono::duration<double>(now - t0_).count();
  const double since = std::chrono::duration<double>(now - last_).count();
  const bool last = done >= total_;
  if (!bar_ && !last && since < interval_) return;
  if (bar_ && !last && since < 0.2) return;
  last_ = now;
  const double per = done > start_done_ ? el / double(done - start_done_) : 0;
  const double eta = per * double(total_ - done);
  const double rate = units >= 0 ? (el > 0 ? (units - start_units_) / el : 0) : (per > 0 ? 1 / per : 0);
  char line[512];
  std::snprintf(line, sizeof line, "%s %lld/%lld (%.0f%%) | %s | %.2f %s/s | elapsed %s | ETA %s",
                label_.c_str(), (long long)done, (long long)total_, 100.0 * double(done) / double(std::max<int64_t>(total_, 1)),
                fields.c_str(), rate, rate_units, format_duration(el).c_str(),
                done > start_done_ ? format_duration(eta).c_str() : "?");
  if (bar_) {
    std::fprintf(stderr, "\r\033[2K%s", line);
    std::fflush(stderr);
    open_ = true;
  } else {
    spdlog::info("{}", line);
  }
}

void Progress::finish() {
  if (open_) { std::fprintf(stderr, "\n"); std::fflush(stderr); open_ = false; }
}

Progress::~Progress() { finish(); }

}  // namespace instinct
