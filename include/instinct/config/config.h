#pragma once
// Configuration as plain structs bound to YAML.
//
// Every config struct lists its fields once in a `visit` member template, whose string is the
// field's one documentation line (shown by --print-config; no `///<` copy beside the field):
//
//   struct OptimConfig {
//     double lr = 1e-3;
//     template <class V> void visit(V& v) { v("lr", lr, "peak learning rate at the base batch"); }
//   };
//
// A config may derive from another and visit the base's keys first (distill::TrainerConfig).
//
// From that single list the framework reads YAML (rejecting unknown keys and naming the nearest
// valid one), applies `key.sub=value` command-line overrides (the right-hand side parsed as YAML),
// writes the fully resolved configuration back as YAML, and prints documented defaults.
#include <yaml-cpp/yaml.h>

#include <array>
#include <cstdint>
#include <set>
#include <string>
#include <type_traits>
#include <vector>

#include "instinct/common/error.h"

namespace instinct::config {

/// Levenshtein distance (for "did you mean" suggestions).
size_t edit_distance(const std::string& a, const std::string& b);

/// Among `candidates`, the one closest to `key` (empty when nothing is reasonably close).
std::string nearest_key(const std::string& key, const std::vector<std::string>& candidates);

/// Parses a YAML file into a node; errors name the file and the parser's line/column.
YAML::Node load_yaml_file(const std::string& path);

/// Applies one `a.b.c=value` override to `root` (value parsed as YAML; creates missing maps).
void apply_override(YAML::Node& root, const std::string& assignment);

/// All dotted leaf keys present in a YAML map (for unknown-key detection).
void collect_keys(const YAML::Node& node, const std::string& prefix, std::vector<std::string>& out);

namespace detail {
template <class T, class = void>
struct is_struct : std::false_type {};
struct NullVisitor {
  template <class U>
  void operator()(const char*, U&, const char*) {}
};
template <class T>
struct is_struct<T, std::void_t<decltype(std::declval<T&>().visit(std::declval<NullVisitor&>()))>>
    : std::true_type {};

template <class T>
const char* type_name() {
  if constexpr (std::is_same_v<T, bool>) return "a boolean";
  else if constexpr (std::is_integral_v<T>) return "an integer";
  else if constexpr (std::is_floating_point_v<T>) return "a number";
  else if constexpr (std::is_same_v<T, std::string>) return "a string";
  else return "a list";
}

template <class T>
void decode_scalar(const YAML::Node& n, const std::string& key, T& out) {
  if (!n.IsScalar()) fail("config key '", key, "': expected ", type_name<T>(), ", got a ",
                          n.IsSequence() ? "list" : (n.IsMap() ? "map" : "null"));
  try {
    out = n.as<T>();
  } catch (const YAML::Exception&) {
    fail("config key '", key, "': expected ", type_name<T>(), ", got '", n.Scalar(), "'");
  }
}

template <class T>
void decode(const YAML::Node& n, const std::string& key, T& out);

template <class T>
struct is_vector : std::false_type {};
template <class T>
struct is_vector<std::vector<T>> : std::true_type {};
template <class T>
struct is_array : std::false_type {};
template <class T, size_t N>
struct is_array<std::array<T, N>> : std::true_type {};

/// Reads fields from a YAML map (or from nothing: `node` undefined) and records every valid key.
struct Reader {
  YAML::Node node;
  std::string prefix;
  std::set<std::string>* known;
  template <class T>
  void operator()(const char* name, T& field, const char* /*doc*/) {
    const std::string key = prefix.empty() ? name : prefix + "." + name;
    const YAML::Node child = node.IsDefined() && node.IsMap() ? node[name] : YAML::Node(YAML::NodeType::Undefined);
    if constexpr (is_struct<T>::value) {
      known->insert(key + ".");
      if (child.IsDefined() && !child.IsNull() && !child.IsMap())
        fail("config key '", key, "': expected a map of settings");
      Reader sub{child, key, known};
      field.visit(sub);
    } else {
      known->insert(key);
      if (child.IsDefined()) decode(child, key, field);
    }
  }
};

template <class T>
void decode(const YAML::Node& n, const std::string& key, T& out) {
  if constexpr (is_vector<T>::value) {
    if (n.IsNull()) { out.clear(); return; }
    if (!n.IsSequence()) fail("config key '", key, "': expected a list");
    out.clear();
    for (size_t i = 0; i < n.size(); ++i) {
      typename T::value_type v{};
      decode(n[i], key + "[" + std::to_string(i) + "]", v);
      out.push_back(v);
    }
  } else if constexpr (is_array<T>::value) {
    if (!n.IsSequence() || n.size() != out.size())
      fail("config key '", key, "': expected a list of ", out.size(), " values");
    for (size_t i = 0; i < out.size(); ++i) decode(n[i], key + "[" + std::to_string(i) + "]", out[i]);
  } else {
    decode_scalar(n, key, out);
  }
}

/// Writes fields into a YAML emitter (with the doc line as a comment).
struct Writer {
  YAML::Emitter& out;
  template <class T>
  void operator()(const char* name, const T& field, const char* doc) {
    out << YAML::Key << name;
    if constexpr (is_struct<T>::value) {
      out << YAML::Value << YAML::BeginMap;
      const_cast<T&>(field).visit(*this);
      out << YAML::EndMap;
    } else if constexpr (is_vector<T>::value || is_array<T>::value) {
      out << YAML::Value << YAML::Flow << YAML::BeginSeq;
      for (const auto& v : field) out << v;
      out << YAML::EndSeq;
      if (doc && *doc) out << YAML::Comment(doc);
    } else {
      out << YAML::Value << field;
      if (doc && *doc) out << YAML::Comment(doc);
    }
  }
};
}  // namespace detail

/// Binds a YAML map onto config struct `cfg` (fields absent from YAML keep their defaults).
/// Unknown keys throw: "config: unknown key 'optim.lrr' (did you mean 'optim.lr'?)".
template <class T>
void from_yaml(const YAML::Node& root, T& cfg, const std::string& source = "config") {
  if (root && !root.IsNull() && !root.IsMap()) fail(source, ": expected a YAML map at the top level");
  std::set<std::string> known;
  YAML::Node r = root ? root : YAML::Node(YAML::NodeType::Map);
  detail::Reader reader{r, "", &known};
  cfg.visit(reader);
  std::vector<std::string> present;
  collect_keys(r, "", present);
  std::vector<std::string> leaves;
  for (const auto& k : known)
    if (k.back() != '.') leaves.push_back(k);
  for (const auto& key : present) {
    if (known.count(key) || known.count(key + ".")) continue;
    const std::string near = nearest_key(key, leaves);
    fail(source, ": unknown key '", key, "'", near.empty() ? "" : " (did you mean '" + near + "'?)");
  }
}

/// Serialises a config struct to YAML text (fields in declaration order, doc lines as comments).
template <class T>
std::string to_yaml(const T& cfg) {
  YAML::Emitter out;
  out << YAML::BeginMap;
  detail::Writer w{out};
  const_cast<T&>(cfg).visit(w);
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

/// Loads `path` (may be empty: defaults only), applies overrides in order, binds onto `cfg`.
template <class T>
void load(const std::string& path, const std::vector<std::string>& overrides, T& cfg) {
  YAML::Node root = path.empty() ? YAML::Node(YAML::NodeType::Map) : load_yaml_file(path);
  if (root.IsNull()) root = YAML::Node(YAML::NodeType::Map);
  for (const auto& o : overrides) apply_override(root, o);
  from_yaml(root, cfg, path.empty() ? std::string("config") : path);
}

}  // namespace instinct::config
