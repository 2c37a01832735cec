#include "eval/report_html.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <tuple>
#include <vector>

#include "instinct/io/atomic_file.h"

namespace instinct::eval {
using json = nlohmann::json;

std::string base64_encode(const std::string& bytes) {
  static const char* A = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    const uint32_t v = uint32_t(uint8_t(bytes[i])) << 16 | uint32_t(uint8_t(bytes[i + 1])) << 8 | uint8_t(bytes[i + 2]);
    for (int s = 18; s >= 0; s -= 6) out += A[(v >> s) & 63];
  }
  if (const size_t r = bytes.size() - i) {
    uint32_t v = uint32_t(uint8_t(bytes[i])) << 16;
    if (r == 2) v |= uint32_t(uint8_t(bytes[i + 1])) << 8;
    out += A[(v >> 18) & 63];
    out += A[(v >> 12) & 63];
    out += r == 2 ? A[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::string html_escape(const std::string& s) {
  std::string o;
  o.reserve(s.size());
  for (char c : s) switch (c) {
      case '&': o += "&amp;"; break;
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '"': o += "&quot;"; break;
      case '\'': o += "&#39;"; break;
      default: o += c;
    }
  return o;
}

namespace {
const char* kPrompts[] = {"concept", "box", "point"};

template <class... A>
std::string fmt(const char* f, A... a) {
  char buf[256];
  std::snprintf(buf, sizeof buf, f, a...);
  return buf;
}

std::string text_of(const json& v) { return html_escape(v.is_string() ? v.get<std::string>() : v.dump()); }

// Table order: report["models"], else the reference model then the summary's other keys.
std::vector<std::string> model_order(const json& r) {
  std::vector<std::string> out;
  if (r.contains("models"))
    for (const auto& m : r["models"]) out.push_back(m.get<std::string>());
  if (!out.empty()) return out;
  const std::string ref = r.value("reference_model", "");
  if (!ref.empty()) out.push_back(ref);
  for (auto it = r["summary"].begin(); it != r["summary"].end(); ++it)
    if (it.key() != ref) out.push_back(it.key());
  return out;
}

// Prompt columns: those the reference model's summary holds, in table order.
std::vector<std::string> prompt_order(const json& r, const std::string& ref) {
  std::vector<std::string> out;
  const json& s = r["summary"][ref];
  for (const char* p : kPrompts)
    if (s.contains(p)) out.push_back(p);
  return out;
}

// One chart: 10 IoU bins over [0, 1] (the last includes 1), bar heights relative to the tallest bin.
std::string histogram_svg(const std::string& model, const std::string& prompt, const std::vector<double>& ious) {
  int counts[10] = {0};
  for (double v : ious) counts[std::clamp(int(std::floor(v * 10)), 0, 9)]++;
  const int peak = std::max(1, *std::max_element(counts, counts + 10));
  const double W = 250, H = 170, ml = 42, mr = 8, mt = 16, mb = 36;
  const double pw = W - ml - mr, ph = H - mt - mb, bw = pw / 10;
  const std::string m = html_escape(model), p = html_escape(prompt);
  std::string s = fmt(R"(<svg class="hist" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" role="img" )", W, H, W, H) +
                  "data-model=\"" + m + "\" data-prompt=\"" + p + "\" data-count=\"" + std::to_string(ious.size()) +
                  "\" aria-label=\"IoU histogram, " + m + ", " + p + "\">\n<title>" + m + " | " + p + ": " +
                  std::to_string(ious.size()) + " targets</title>\n";
  for (int i = 0; i < 10; ++i) {
    const double h = ph * counts[i] / peak, x = ml + i * bw, y = mt + ph - h;
    s += fmt(R"(<rect class="bar" data-bin="%d" data-count="%d" x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="#4a7fc1"/>)",
             i, counts[i], x + 1, y, bw - 2, h) + "\n";
    if (counts[i] > 0)
      s += fmt(R"(<text class="count" x="%.1f" y="%.1f" font-size="9" text-anchor="middle">%d</text>)", x + bw / 2, y - 2,
               counts[i]) + "\n";
  }
  s += fmt(R"(<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#333"/>)", ml, mt + ph, ml + pw, mt + ph) + "\n";
  s += fmt(R"(<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#333"/>)", ml, mt, ml, mt + ph) + "\n";
  for (int t = 0; t <= 10; t += 5) {
    const double x = ml + pw * t / 10;
    s += fmt(R"(<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#333"/>)", x, mt + ph, x, mt + ph + 4) + "\n";
    s += fmt(R"(<text x="%.1f" y="%.1f" font-size="10" text-anchor="middle">%s</text>)", x, mt + ph + 14,
             t == 0 ? "0" : t == 5 ? "0.5" : "1") + "\n";
  }
  for (int c : {0, peak})
    s += fmt(R"(<text x="%.1f" y="%.1f" font-size="10" text-anchor="end">%d</text>)", ml - 4,
             mt + ph - ph * c / peak + 3, c) + "\n";
  s += fmt(R"(<text x="%.1f" y="%.1f" font-size="11" text-anchor="middle">IoU</text>)", ml + pw / 2, H - 4) + "\n";
  s += fmt(R"~(<text x="12" y="%.1f" font-size="11" text-anchor="middle" transform="rotate(-90 12 %.1f)">targets</text>)~",
           mt + ph / 2, mt + ph / 2) + "\n";
  return s + "</svg>";
}

const char* kStyle = R"(body{font-family:sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left}
#summary td.num{text-align:right;font-variant-numeric:tabular-nums}
.charts{display:flex;flex-wrap:wrap;gap:1em}
figure{margin:.5em 0}
figure.overlay img{max-width:100%;border:1px solid #ccc}
figcaption{font-size:.9em}
.meta th{background:#f4f4f4}
)";
}  // namespace

std::string render_report_html(const json& r, const std::string& output_dir, const std::string& generated) {
  const auto models = model_order(r);
  const std::string ref = models.empty() ? std::string() : models.front();
  const auto prompts = prompt_order(r, ref);
  const bool cgf1 = r.contains("protocol") && r["protocol"].value("cgf1", false);
  const json& summary = r["summary"];

  std::string h = "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
                  "<title>instinct-eval report</title>\n<style>\n" + std::string(kStyle) + "</style>\n</head>\n<body>\n"
                  "<h1>instinct-eval report</h1>\n";

  // Header: where the numbers come from.
  h += "<table class=\"meta\" id=\"meta\">\n";
  auto meta = [&](const std::string& k, const std::string& v_html) { h += "<tr><th>" + k + "</th><td>" + v_html + "</td></tr>\n"; };
  meta("generated", html_escape(generated));
  meta("annotations", text_of(r.value("annotations", json(""))));
  if (r.contains("teacher")) meta("teacher bundle", text_of(r["teacher"]));
  if (r.contains("predictions"))
    for (const auto& f : r["predictions"])
      meta("results file", text_of(f.value("name", json(""))) + ": " + text_of(f.value("path", json(""))) + " (" +
                                text_of(f.value("rows", json(0))) + " rows)");
  std::string ml;
  for (size_t i = 0; i < models.size(); ++i) ml += (i ? ", " : "") + html_escape(models[i]) + (i ? "" : " (reference)");
  meta("models", ml);
  meta("images", fmt("%lld evaluated, %lld targets, %lld skipped as unreadable", (long long)r.value("images", 0LL),
                     (long long)r.value("targets", 0LL), (long long)r.value("images_skipped", 0LL)));
  if (r.contains("timing"))
    meta("timing", fmt("%.1f s, %.2f images/s", r["timing"].value("wall_s", 0.0), r["timing"].value("images_per_s", 0.0)));
  h += "</table>\n<h2>Protocol</h2>\n<table class=\"meta\" id=\"protocol\">\n";
  if (r.contains("protocol"))
    for (auto it = r["protocol"].begin(); it != r["protocol"].end(); ++it) meta(html_escape(it.key()), text_of(it.value()));
  h += "</table>\n";

  // Summary: the console table.
  h += "<h2>Summary</h2>\n<table id=\"summary\">\n<thead><tr><th>model</th><th>trunk params</th>";
  for (const auto& p : prompts) h += "<th>" + (p == "concept" ? std::string("concept IoU") : p + " mIoU") + "</th>";
  if (cgf1) h += "<th>concept cgF1</th>";
  h += "</tr></thead>\n<tbody>\n";
  for (const auto& m : models) {
    const json& s = summary.contains(m) ? summary[m] : json::object();
    h += "<tr data-model=\"" + html_escape(m) + "\"><td>" + html_escape(m) + "</td><td class=\"num\">" +
         (s.contains("trunk_params") ? fmt("%.2fM", double(s["trunk_params"].get<int64_t>()) / 1e6) : "-") + "</td>";
    auto cell = [&](const std::string& col, const json& c, const char* key, const std::string& title) {
      const double v = c.value(key, 0.0), pct = c.value("pct_of_reference", 0.0);
      h += "<td class=\"num\" data-col=\"" + col + "\" title=\"" + html_escape(title) + "\">" +
           fmt("%.3f (%.0f%%)", v, pct) + "</td>";
    };
    for (const auto& p : prompts) {
      const json& c = s.contains(p) ? s[p] : json::object();
      cell(p, c, "mean",
           fmt("mean %.6f, median %.6f, %lld targets, %lld missing", c.value("mean", 0.0), c.value("median", 0.0),
               (long long)c.value("count", 0LL), (long long)c.value("missing", 0LL)));
    }
    if (cgf1) {
      const json& c = s.contains("cgf1") ? s["cgf1"] : json::object();
      cell("cgf1", c, "cgf1", fmt("cgF1 %.6f = pmF1 %.6f x IL_MCC %.6f", c.value("cgf1", 0.0), c.value("pmf1", 0.0),
                                  c.value("il_mcc", 0.0)));
    }
    h += "</tr>\n";
  }
  h += "</tbody>\n</table>\n<p>Each cell: mean IoU (cgF1) and, in parentheses, its percentage of the reference model "
       "(" + html_escape(ref) + ").</p>\n";

  // IoU histograms: one row of charts per prompt, one chart per model.
  std::map<std::pair<std::string, std::string>, std::vector<double>> ious;
  std::map<std::tuple<std::string, std::string, int64_t, int64_t>, const json*> by_target;
  if (r.contains("rows"))
    for (const auto& row : r["rows"]) {
      const auto m = row["model"].get<std::string>(), p = row["prompt"].get<std::string>();
      ious[{m, p}].push_back(row["iou"].get<double>());
      by_target[{m, p, row["image_id"].get<int64_t>(), row["annotation_id"].get<int64_t>()}] = &row;
    }
  h += "<h2>IoU histograms</h2>\n<p>Targets per IoU bin (10 bins over [0, 1]; the last bin includes 1).</p>\n";
  for (const auto& p : prompts) {
    h += "<h3>" + html_escape(p) + "</h3>\n<div class=\"charts\">\n";
    for (const auto& m : models) {
      const auto& v = ious[{m, p}];
      h += "<figure>\n" + histogram_svg(m, p, v) + "\n<figcaption>" + html_escape(m) + " | " + html_escape(p) + " | " +
           std::to_string(v.size()) + " targets</figcaption>\n</figure>\n";
    }
    h += "</div>\n";
  }

  // Overlays, one figure per image.
  const json no_overlays = json::array();
  const json& ov = r.contains("overlays") ? r["overlays"] : no_overlays;
  h += "<h2>Overlays</h2>\n";
  if (ov.empty())
    h += "<p>None (overlays=0).</p>\n";
  else
    h += "<p>Green: target outline; red: predicted mask; yellow: box prompt; cyan: point prompt. One row of panels per "
         "model, one column per prompt.</p>\n";
  for (const auto& o : ov) {
    const auto png = o["png"].get<std::string>();
    const int64_t img = o["image_id"].get<int64_t>(), ann = o["annotation_id"].get<int64_t>();
    const std::string data = base64_encode(io::read_file(output_dir + "/" + png));
    h += "<figure class=\"overlay\" data-image-id=\"" + std::to_string(img) + "\" data-png=\"" + html_escape(png) +
         "\">\n<img src=\"data:image/png;base64," + data + "\" alt=\"overlay of image " + std::to_string(img) + "\">\n" +
         "<figcaption>image " + std::to_string(img) + " (" + text_of(o.value("file_name", json(""))) + "), target " +
         "annotation " + std::to_string(ann) + " (" + text_of(o.value("category", json(""))) + ")\n" +
         "<table class=\"ious\"><tr><th>model</th>";
    for (const auto& p : prompts) h += "<th>" + html_escape(p) + " IoU</th>";
    h += "</tr>\n";
    for (const auto& m : models) {
      h += "<tr><td>" + html_escape(m) + "</td>";
      for (const auto& p : prompts) {
        auto it = by_target.find({m, p, img, ann});
        h += it == by_target.end() ? std::string("<td>-</td>")
                                   : fmt("<td class=\"num\">%.2f</td>", (*it->second)["iou"].get<double>());
      }
      h += "</tr>\n";
    }
    h += "</table>\n</figcaption>\n</figure>\n";
  }
  return h + "</body>\n</html>\n";
}

}  // namespace instinct::eval
