#include "instinct/config/config.h"

#include <algorithm>
#include <fstream>

namespace instinct::config {

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1])});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::string nearest_key(const std::string& key, const std::vector<std::string>& candidates) {
  // Compare against full dotted keys and, separately, the last component (a typo in a section name
  // or a key placed under the wrong section both find their match).
  auto last = [](const std::string& k) { auto p = k.rfind('.'); return p == std::string::npos ? k : k.substr(p + 1); };
  std::string best;
  size_t best_d = std::string::npos;
  for (const auto& c : candidates) {
    size_t d = std::min(edit_distance(key, c), edit_distance(last(key), last(c)) + 1);
    if (d < best_d) { best_d = d; best = c; }
  }
  const size_t limit = std::max<size_t>(2, key.size() / 3);
  return best_d <= limit ? best : std::string();
}

YAML::Node load_yaml_file(const std::string& path) {
  std::ifstream f(path);
  INSTINCT_CHECK(f.good(), "config file '", path, "' cannot be opened");
  try {
    return YAML::LoadFile(path);
  } catch (const YAML::ParserException& e) {
    fail("config file '", path, "': YAML syntax error at line ", e.mark.line + 1, ", column ",
         e.mark.column + 1, ": ", e.msg);
  }
}

void apply_override(YAML::Node& root, const std::string& assignment) {
  const auto eq = assignment.find('=');
  INSTINCT_CHECK(eq != std::string::npos && eq > 0, "override '", assignment,
                 "': expected key.sub=value");
  INSTINCT_CHECK(root.IsMap() || root.IsNull(), "override '", assignment,
                 "': the configuration is not a YAML map of settings");
  const std::string key = assignment.substr(0, eq);
  YAML::Node value;
  try {
    value = YAML::Load(assignment.substr(eq + 1));
  } catch (const YAML::Exception& e) {
    fail("override '", assignment, "': value is not valid YAML (", e.msg, ")");
  }
  std::vector<std::string> parts;
  size_t start = 0;
  for (size_t p; (p = key.find('.', start)) != std::string::npos; start = p + 1)
    parts.push_back(key.substr(start, p - start));
  parts.push_back(key.substr(start));
  for (const auto& p : parts) INSTINCT_CHECK(!p.empty(), "override '", assignment, "': empty key component");
  // yaml-cpp nodes are handles: walk with copies, assign at the leaf.
  std::vector<YAML::Node> chain{root};
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    YAML::Node next = chain.back()[parts[i]];
    if (!next.IsMap()) {
      chain.back()[parts[i]] = YAML::Node(YAML::NodeType::Map);
      next = chain.back()[parts[i]];
    }
    chain.push_back(next);
  }
  chain.back()[parts.back()] = value.IsNull() && assignment.substr(eq + 1).empty() ? YAML::Node("") : value;
}

void collect_keys(const YAML::Node& node, const std::string& prefix, std::vector<std::string>& out) {
  if (!node.IsMap()) return;
  for (const auto& kv : node) {
    INSTINCT_CHECK(kv.first.IsScalar(), "config: a key ", prefix.empty() ? "at the top level" : "under '" + prefix + "'",
                   " is a ", kv.first.IsSequence() ? "list" : (kv.first.IsMap() ? "map" : "null"),
                   ", expected a setting name");
    const std::string key = prefix.empty() ? kv.first.Scalar() : prefix + "." + kv.first.Scalar();
    if (kv.second.IsMap() && kv.second.size() > 0) collect_keys(kv.second, key, out);
    else out.push_back(key);
  }
}

}  // namespace instinct::config
