#pragma once
// report.html: the evaluation report as one self-contained page (no scripts, no external files): a
// header with the run's settings, the summary table (the numbers of the console table), one IoU
// histogram per (prompt, model) as inline SVG, and the overlay PNGs embedded as data: URIs with
// their per-model / per-prompt IoUs. Built from the report.json object; torch-free.
#include <nlohmann/json_fwd.hpp>

#include <string>

namespace instinct::eval {

/// Standard base64 (RFC 4648, with '=' padding) of `bytes`.
std::string base64_encode(const std::string& bytes);

/// `s` with & < > " ' replaced by character references (safe in text and quoted attributes).
std::string html_escape(const std::string& s);

/// The page for `report` (the object written as report.json). Model order comes from
/// report["models"] (falls back to reference_model first, then the summary's keys); overlays are the
/// entries of report["overlays"], read from `output_dir`/<png>. `generated` is the date shown in the
/// header. Throws instinct::Error naming the file when an overlay PNG cannot be read.
std::string render_report_html(const nlohmann::json& report, const std::string& output_dir,
                               const std::string& generated);

}  // namespace instinct::eval
