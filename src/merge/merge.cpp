#include "instinct/merge/merge.h"

#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <unistd.h>

#include "instinct/common/error.h"
#include "common/tensor_ops.h"
#include "instinct/io/archive.h"
#include "instinct/io/atomic_file.h"
#include "instinct/io/safetensors.h"
#include "instinct/io/sha256.h"
#include "instinct/io/torch_zip.h"
#include "instinct/model/trunk_io.h"
#include "instinct/model/vit.h"
#include "instinct/teacher/bundle.h"
#include "instinct/teacher/phrases.h"
#ifdef INSTINCT_WITH_TOKENIZER
#include "instinct/text/tokenizer.h"
#endif

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace instinct::merge {
namespace {

bool starts_with(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }

std::string human_bytes(int64_t b) {
  char buf[32];
  if (b >= (int64_t(1) << 30)) std::snprintf(buf, sizeof buf, "%.2f GiB", double(b) / double(1 << 30));
  else if (b >= (1 << 20)) std::snprintf(buf, sizeof buf, "%.1f MiB", double(b) / double(1 << 20));
  else std::snprintf(buf, sizeof buf, "%lld B", static_cast<long long>(b));
  return buf;
}

std::string list_first(const std::vector<std::string>& v, size_t n = 5) {
  std::string s;
  for (size_t i = 0; i < v.size() && i < n; ++i) s += (i ? ", " : "") + v[i];
  if (v.size() > n) s += ", ... (" + std::to_string(v.size()) + " in all)";
  return s;
}

bool allowed(const std::string& key, const std::vector<std::string>& allow) {
  for (const auto& a : allow)
    if (starts_with(key, a)) return true;
  return false;
}

// The student trunk, validated against the architecture its tensors imply: every key of that
// architecture present with its shape, nothing else (offenders under `allow` prefixes are waived).
model::VitConfig check_student(const io::TensorList& sd, const std::string& path, const std::vector<std::string>& allow,
                               std::vector<std::string>& waived) {
  model::VitConfig cfg;
  try {
    cfg = model::infer_student_config(sd, 0);
  } catch (const Error& e) {
    fail(path, ": ", e.what());
  }
  cfg.out_grid = 1;  // not stored in the weights
  model::StudentTrunk ref(cfg);
  std::map<std::string, std::vector<int64_t>> want;
  for (const auto& [k, t] : model::state_dict(*ref)) want[k] = t.sizes().vec();
  std::vector<std::string> missing, unexpected, mismatched;
  std::set<std::string> have;
  for (const auto& [k, t] : sd) {
    have.insert(k);
    auto it = want.find(k);
    if (it == want.end()) (allowed(k, allow) ? waived : unexpected).push_back(k);
    else if (t.sizes().vec() != it->second)
      mismatched.push_back(k + " " + shape_str(t.sizes()) + " vs " + shape_str(it->second));
  }
  for (const auto& [k, s] : want)
    if (!have.count(k)) (allowed(k, allow) ? waived : missing).push_back(k);
  INSTINCT_CHECK(missing.empty() && unexpected.empty() && mismatched.empty(), path,
                 ": student trunk does not match the ViT its tensors imply (width ", cfg.width, ", depth ", cfg.depth,
                 ", patch ", cfg.patch, ", ", cfg.img_size, " px):",
                 missing.empty() ? "" : " missing " + list_first(missing) + ";",
                 unexpected.empty() ? "" : " unexpected " + list_first(unexpected) + ";",
                 mismatched.empty() ? "" : " shape mismatch " + list_first(mismatched) + ";",
                 " (--allow PREFIX waives named prefixes)");
  return cfg;
}

std::string arch_str(const model::VitConfig& c) {
  return model::backbone_name(c) + " (width " + std::to_string(c.width) + ", depth " + std::to_string(c.depth) +
         ", patch " + std::to_string(c.patch) + ", " + std::to_string(c.img_size) + " px, " +
         std::to_string(c.out_channels) + " output channels)";
}

const io::TensorRef* tensor_at(const io::PyPtr& dict, const std::string& key) {
  auto v = dict->get(key);
  return v && v->is_tensor() ? &v->tensor : nullptr;
}

void write_manifest(const std::string& path, const json& j) { io::write_file_atomic(path, j.dump(2) + "\n"); }

json file_entry(const std::string& path) { return {{"path", path}, {"sha256", io::sha256_file(path)}}; }

// Parent directory of `path` exists and is writable (checked before any work is done).
void check_output_dir(const std::string& path) {
  fs::path parent = fs::path(path).parent_path();
  if (parent.empty()) parent = ".";
  std::error_code ec;
  INSTINCT_CHECK(fs::is_directory(parent, ec), path, ": output directory '", parent.string(), "' does not exist");
  INSTINCT_CHECK(::access(parent.c_str(), W_OK) == 0, path, ": output directory '", parent.string(),
                 "' is not writable");
}

}  // namespace

std::vector<std::string> MergeSummary::lines() const {
  auto line = [](const char* what, const MergeCount& c, const std::string& note) {
    char buf[160];
    std::snprintf(buf, sizeof buf, "%-9s %6lld tensors %12s", what, static_cast<long long>(c.tensors),
                  human_bytes(c.bytes).c_str());
    return std::string(buf) + (note.empty() ? "" : "  " + note);
  };
  std::vector<std::string> out = {
      line("kept", kept, "copied byte for byte"),
      line("removed", removed, "teacher trunk"),
      line("inserted", inserted, "student trunk: " + student_arch),
      line("replaced", replaced, replaced.tensors || inserted_text.tensors
                                     ? "text encoder, by " + std::to_string(inserted_text.tensors) + " tensors (" +
                                           human_bytes(inserted_text.bytes) + ")"
                                     : "")};
  if (!waived.empty()) out.push_back("waived by --allow: " + list_first(waived));
  return out;
}

MergeSummary merge_sam3(const Sam3MergeOptions& o) {
  INSTINCT_CHECK(!o.sam3.empty() && !o.trunk.empty() && (o.dry_run || !o.output.empty()),
                 "instinct-merge sam3 needs --sam3, --trunk and --output");
  if (!o.dry_run) check_output_dir(o.output);
  MergeSummary sum;
  io::LazyArchive src(o.sam3);
  const io::PyPtr& root = src.root();
  INSTINCT_CHECK(root->is_dict(), o.sam3, ": top-level object is a ", root->type_name(), ", expected a dict");
  io::PyPtr sd = root;
  if (auto m = root->get("model"); m && m->is_dict()) {
    sd = m;
    sum.wrapped = true;
  }
  // Key checks on the SAM3 side: string keys, no duplicates, tensors, SAM3's prefixes.
  std::set<std::string> keys;
  std::vector<std::string> unexpected;
  for (const auto& [k, v] : sd->dict) {
    INSTINCT_CHECK(k->is_str(), o.sam3, ": state dict has a key of type ", k->type_name(), ", expected strings");
    INSTINCT_CHECK(keys.insert(k->s).second, o.sam3, ": key '", k->s, "' occurs twice; the file is malformed");
    INSTINCT_CHECK(v->is_tensor(), o.sam3, ": value of '", k->s, "' is a ", v->type_name(), ", expected a tensor");
    if (!starts_with(k->s, "detector.") && !starts_with(k->s, "tracker.")) {
      if (allowed(k->s, o.allow)) sum.waived.push_back(k->s);
      else unexpected.push_back(k->s);
    }
  }
  INSTINCT_CHECK(unexpected.empty(), o.sam3, ": keys outside SAM3's detector.* / tracker.*: ", list_first(unexpected),
                 " (--allow PREFIX waives them)");
  const io::TensorRef* patch = tensor_at(sd, o.trunk_prefix + "patch_embed.proj.weight");
  INSTINCT_CHECK(patch && patch->sizes.size() == 4, o.sam3, ": no '", o.trunk_prefix,
                 "patch_embed.proj.weight'; expected a SAM3 checkpoint with its vision trunk (keys ", o.trunk_prefix,
                 "*)");
  const int64_t sam3_width = patch->sizes[0];

  // Student.
  io::TensorList student = model::read_trunk_state(o.trunk);
  const model::VitConfig cfg = check_student(student, o.trunk, o.allow, sum.waived);
  INSTINCT_CHECK(cfg.out_channels == sam3_width, o.trunk, ": student trunk outputs ", cfg.out_channels,
                 " channels, but SAM3's trunk (", o.sam3, ") is ", sam3_width, " wide; expected an adapter head with ",
                 sam3_width, " output channels");
  sum.student_arch = arch_str(cfg);

  // Text encoder.
  io::TensorList text;
  if (!o.text.empty()) {
    text = model::read_state_dict(o.text, {"state_dict", "model"});
    const io::TensorRef* resizer = tensor_at(sd, o.text_prefix + "resizer.weight");
    INSTINCT_CHECK(resizer && resizer->sizes.size() == 2, o.sam3, ": no '", o.text_prefix,
                   "resizer.weight' to take the text width from (--text-prefix?)");
    const at::Tensor* proj = nullptr;
    for (auto& [k, t] : text)
      if (k == "projector.weight" || k == o.text_prefix + "projector.weight") proj = &t;
    INSTINCT_CHECK(proj && proj->dim() == 2, o.text, ": no 'projector.weight' (out, in); expected a text encoder "
                   "state dict with encoder.* and projector.* keys");
    INSTINCT_CHECK(proj->size(0) == resizer->sizes[0], o.text, ": projector.weight is ", shape_str(proj->sizes()),
                   ": its ", proj->size(0), " outputs do not match SAM3's text width ", resizer->sizes[0], " (",
                   o.text_prefix, "resizer.weight)");
  }

  // Plan: walk SAM3's keys in order, the student where the trunk was, the text where the language
  // backbone was.
  std::vector<std::pair<std::string, const io::TensorRef*>> kept_refs;
  struct Slot {
    size_t at;
    int which;  // 0 student, 1 text
  };
  std::vector<Slot> slots;
  for (const auto& [k, v] : sd->dict) {
    const std::string& key = k->s;
    const int64_t nb = v->tensor.nbytes();
    if (starts_with(key, o.trunk_prefix)) {
      if (!sum.removed.tensors) slots.push_back({kept_refs.size(), 0});
      sum.removed.tensors++, sum.removed.bytes += nb;
    } else if (!text.empty() && starts_with(key, o.text_prefix)) {
      if (!sum.replaced.tensors) slots.push_back({kept_refs.size(), 1});
      sum.replaced.tensors++, sum.replaced.bytes += nb;
    } else {
      kept_refs.emplace_back(key, &v->tensor);
      sum.kept.tensors++, sum.kept.bytes += nb;
    }
  }
  std::set<std::string> out_keys;
  for (const auto& kv : kept_refs) out_keys.insert(kv.first);
  auto prefixed = [](const std::string& prefix, const std::string& k) { return starts_with(k, prefix) ? k : prefix + k; };
  for (const auto& [k, t] : student) {
    INSTINCT_CHECK(out_keys.insert(o.trunk_prefix + k).second, o.trunk, ": key '", o.trunk_prefix + k,
                   "' would occur twice in the output");
    sum.inserted.tensors++, sum.inserted.bytes += t.numel() * int64_t(t.element_size());
  }
  for (const auto& [k, t] : text) {
    INSTINCT_CHECK(out_keys.insert(prefixed(o.text_prefix, k)).second, o.text, ": key '", prefixed(o.text_prefix, k),
                   "' would occur twice in the output");
    sum.inserted_text.tensors++, sum.inserted_text.bytes += t.numel() * int64_t(t.element_size());
  }
  if (o.dry_run) return sum;

  // Write.
  const std::string manifest = o.manifest.empty() ? o.output + ".manifest.json" : o.manifest;
  {
    io::ArchiveWriter w(o.output);
    auto out_sd = io::PyValue::make_dict();
    auto insert_group = [&](int which) {
      if (which == 0)
        for (const auto& [k, t] : student) out_sd->dict.emplace_back(io::PyValue::str(o.trunk_prefix + k), w.add_tensor(t));
      else
        for (const auto& [k, t] : text) out_sd->dict.emplace_back(io::PyValue::str(prefixed(o.text_prefix, k)), w.add_tensor(t));
    };
    size_t next_slot = 0;
    for (size_t i = 0; i <= kept_refs.size(); ++i) {
      while (next_slot < slots.size() && slots[next_slot].at == i) insert_group(slots[next_slot++].which);
      if (i < kept_refs.size()) out_sd->dict.emplace_back(io::PyValue::str(kept_refs[i].first), w.copy_tensor(src, *kept_refs[i].second));
    }
    student.clear();
    text.clear();
    io::PyPtr out_root = out_sd;
    if (sum.wrapped) {  // keep the wrapper's other entries (e.g. "meta"), tensors copied, values re-written
      out_root = io::PyValue::make_dict();
      std::function<io::PyPtr(const io::PyPtr&, const std::string&)> copy = [&](const io::PyPtr& v, const std::string& at) -> io::PyPtr {
        using K = io::PyValue::Kind;
        if (v->kind == K::Tensor) return w.copy_tensor(src, v->tensor);
        if (v->kind == K::Dict) {
          auto d = io::PyValue::make_dict();
          for (const auto& [k, x] : v->dict) d->dict.emplace_back(k, copy(x, at + "." + (k->is_str() ? k->s : "?")));
          return d;
        }
        if (v->kind == K::List || v->kind == K::Tuple) {
          auto l = std::make_shared<io::PyValue>(*v);
          for (auto& x : l->items) x = copy(x, at);
          return l;
        }
        INSTINCT_CHECK(v->kind != K::Object && v->kind != K::Global && v->kind != K::Storage, o.sam3, ": entry '", at,
                       "' is a ", v->type_name(), ", which a weights_only checkpoint cannot hold");
        return v;
      };
      for (const auto& [k, v] : root->dict)
        out_root->dict.emplace_back(k, k->is_str() && k->s == "model" ? out_sd : copy(v, k->is_str() ? k->s : "?"));
    }
    w.finish(out_root);
  }
  try {
    json j = {{"tool", "instinct-merge sam3"},
              {"inputs", {{"sam3", file_entry(o.sam3)}, {"trunk", file_entry(o.trunk)}}},
              {"output", file_entry(o.output)},
              {"trunk_prefix", o.trunk_prefix},
              {"student", sum.student_arch},
              {"summary",
               {{"kept", {{"tensors", sum.kept.tensors}, {"bytes", sum.kept.bytes}}},
                {"removed", {{"tensors", sum.removed.tensors}, {"bytes", sum.removed.bytes}}},
                {"inserted", {{"tensors", sum.inserted.tensors}, {"bytes", sum.inserted.bytes}}},
                {"replaced", {{"tensors", sum.replaced.tensors}, {"bytes", sum.replaced.bytes}}},
                {"inserted_text", {{"tensors", sum.inserted_text.tensors}, {"bytes", sum.inserted_text.bytes}}}}},
              {"allow", o.allow},
              {"waived", sum.waived}};
    if (!o.text.empty()) {
      j["inputs"]["text"] = file_entry(o.text);
      j["text_prefix"] = o.text_prefix;
    }
    write_manifest(manifest, j);
  } catch (...) {
    std::error_code ec;
    fs::remove(o.output, ec);  // an output without its manifest is not a finished merge
    throw;
  }
  return sum;
}

// Writes a copy of the bundle `info` describes (`j`: its bundle.json) into the new directory `output`
// atomically: `fill(tmp_dir, j)` writes the module files and edits `j`; the tokenizer vocabulary of a
// version-2 bundle is copied; bundle.json is written last and the directory renamed into place.
static void write_bundle_dir(const teacher::BundleInfo& info, const std::string& output,
                             const std::function<void(const fs::path&, json&)>& fill) {
  const fs::path out(output);
  std::error_code ec;
  INSTINCT_CHECK(!fs::exists(out, ec), output, ": already exists; expected a new directory");
  check_output_dir(output);
  const fs::path tmp = out.string() + ".tmp." + std::to_string(::getpid());
  fs::remove_all(tmp, ec);
  try {
    fs::create_directories(tmp);
    std::ifstream in(fs::path(info.dir) / "bundle.json");
    json j = json::parse(in);
    fill(tmp, j);
    if (!info.tokenizer.file.empty())
      fs::copy_file(fs::path(info.dir) / info.tokenizer.file, tmp / info.tokenizer.file, fs::copy_options::overwrite_existing);
    io::write_file_atomic((tmp / "bundle.json").string(), j.dump(2) + "\n");
    fs::rename(tmp, out);
  } catch (const fs::filesystem_error& e) {
    fs::remove_all(tmp, ec);
    fail(output, ": writing the bundle failed: ", e.what());
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
}

std::vector<std::string> merge_bundle(const BundleMergeOptions& o) {
  INSTINCT_CHECK(!o.bundle.empty() && !o.trunk.empty() && (o.dry_run || !o.output.empty()),
                 "instinct-merge bundle needs --bundle, --trunk and --output");
  const teacher::BundleInfo info = teacher::read_bundle_info(o.bundle);
  INSTINCT_CHECK(info.modules.count("trunk"), o.bundle, ": bundle.json lists no trunk module");
  io::TensorList sd = model::read_trunk_state(o.trunk);
  std::vector<std::string> waived;
  model::VitConfig cfg = check_student(sd, o.trunk, {}, waived);
  INSTINCT_CHECK(cfg.out_channels == info.trunk_channels, o.trunk, ": student trunk outputs ", cfg.out_channels,
                 " channels, but the bundle's heads expect trunk.channels = ", info.trunk_channels);
  if (!o.neck.empty()) {
    INSTINCT_CHECK(info.modules.count("detector_neck"), o.bundle, ": bundle.json lists no detector_neck to replace");
    INSTINCT_CHECK(fs::is_regular_file(o.neck), o.neck, ": no such file (expected a TorchScript detector neck)");
  }
  std::vector<std::string> lines;
  lines.push_back("trunk: student " + arch_str(cfg) + " from " + o.trunk);
  if (!o.neck.empty()) lines.push_back("detector_neck: " + o.neck);
  for (const auto& [key, fe] : info.modules)
    if (key != "trunk" && !(key == "detector_neck" && !o.neck.empty())) lines.push_back(key + ": copied (" + fe.first + ")");
  if (o.dry_run) return lines;
  write_bundle_dir(info, o.output, [&](const fs::path& tmp, json& j) {
    for (const auto& [key, fe] : info.modules) {
      const fs::path dst = tmp / fe.first;
      if (key == "trunk") {
        // Re-load and re-save through the model so the file is a clean InstinctSAM trunk file.
        model::StudentTrunk m(cfg);
        model::load_state_dict_strict(*m, sd, o.trunk);
        model::save_trunk_file((tmp / "trunk.pt").string(), *m);
        j["modules"]["trunk"] = {{"file", "trunk.pt"}, {"sha256", io::sha256_file((tmp / "trunk.pt").string())},
                                 {"format", "instinct-trunk"}};
        continue;
      }
      const fs::path from = (key == "detector_neck" && !o.neck.empty()) ? fs::path(o.neck) : fs::path(o.bundle) / fe.first;
      fs::copy_file(from, dst, fs::copy_options::overwrite_existing);
      j["modules"][key]["sha256"] = io::sha256_file(dst.string());
    }
    j["name"] = j.value("name", std::string("bundle")) + "+student";
    j["student"] = {{"trunk", file_entry(o.trunk)}, {"architecture", arch_str(cfg)}};
    if (!o.neck.empty()) j["student"]["detector_neck"] = file_entry(o.neck);
  });
  return lines;
}

std::vector<std::string> rebuild_vocabulary(const VocabOptions& o) {
  INSTINCT_CHECK(!o.bundle.empty() && !o.vocab.empty() && (o.dry_run || !o.output.empty()),
                 "instinct-merge vocab needs --bundle, --vocab and --output");
  const teacher::BundleInfo info = teacher::read_bundle_info(o.bundle);
  INSTINCT_CHECK(info.modules.count("concept_bank"), o.bundle, ": bundle.json lists no concept_bank to rebuild");
  const auto phrases = teacher::read_vocabulary(o.vocab);
  teacher::BundleLoadOptions lo;
  lo.modules = teacher::phrase_modules(info);
  const auto bundle = teacher::TeacherBundle::load(o.bundle, lo);
  for (const auto& p : phrases)
    INSTINCT_CHECK(teacher::can_encode(bundle, p), "vocabulary ", o.vocab, ": phrase '", p, "' is not in the concept bank of ",
                   o.bundle, " and the bundle has no text encoder (re-export it with scripts/export_sam3.py)");
  std::vector<std::string> lines;
  if (o.dry_run) {
    int64_t in_bank = 0;
    for (const auto& p : phrases) in_bank += info.concept_id(p) >= 0;
    lines.push_back("concept_bank: " + std::to_string(phrases.size()) + " phrases, " + std::to_string(in_bank) +
                    " from the current bank, " + std::to_string(int64_t(phrases.size()) - in_bank) + " to encode");
    return lines;
  }
  const auto table = teacher::encode_phrases(bundle, phrases, c10::Device(c10::kCPU), "vocabulary " + o.vocab + ": phrase");
  lines.push_back("concept_bank: " + std::to_string(phrases.size()) + " phrases, " + std::to_string(table.from_bank) +
                  " from the current bank, " + std::to_string(table.from_encoder) + " encoded by the text encoder");
  write_bundle_dir(info, o.output, [&](const fs::path& tmp, json& j) {
    for (const auto& [key, fe] : info.modules) {
      const fs::path dst = tmp / fe.first;
      if (key == "concept_bank") teacher::save_concept_bank(bundle, table, dst.string());
      else fs::copy_file(fs::path(o.bundle) / fe.first, dst, fs::copy_options::overwrite_existing);
      j["modules"][key]["sha256"] = io::sha256_file(dst.string());
      if (key != "concept_bank") lines.push_back(key + ": copied (" + fe.first + ")");
    }
    j["concepts"] = phrases;
    j["vocabulary"] = file_entry(o.vocab);
  });
  return lines;
}

std::vector<std::string> tokenize_phrases(const std::string& bundle, const std::string& vocab_file, int context,
                                          const std::vector<std::string>& phrases) {
  INSTINCT_CHECK(bundle.empty() != vocab_file.empty(), "instinct-merge tokenize needs exactly one of --bundle and --vocab-file");
  std::string vocab = vocab_file;
  if (!bundle.empty()) {
    const auto info = teacher::read_bundle_info(bundle);
    INSTINCT_CHECK(!info.tokenizer.file.empty(), bundle, ": bundle.json names no tokenizer (a version-2 SAM3 export has one)");
    vocab = (fs::path(bundle) / info.tokenizer.file).string();
    if (context == 0) context = info.tokenizer.context_length;
  }
  if (context == 0) context = 32;
  INSTINCT_CHECK(context > 0, "--context must be positive, got ", context);
  std::vector<std::string> out;
#ifdef INSTINCT_WITH_TOKENIZER
  const auto tok = text::ClipTokenizer::load(vocab);
  for (const auto& p : phrases) out.push_back(json{{"text", p}, {"ids", tok.tokenize(p, context)}}.dump());
#else
  fail("this build has no tokenizer (configured with INSTINCT_WITH_TOKENIZER=OFF)");
#endif
  return out;
}

void convert_trunk(const std::string& input, const std::string& output, const std::string& format) {
  INSTINCT_CHECK(format == "instinctsam" || format == "native" || format == "safetensors", "--format '", format,
                 "': expected instinctsam, native or safetensors");
  io::TensorList sd = model::read_trunk_state(input);
  std::vector<std::string> waived;
  const model::VitConfig cfg = check_student(sd, input, {}, waived);
  check_output_dir(output);
  if (format == "safetensors") {
    io::save_safetensors(output, sd, {{"format", "instinct-trunk"}, {"backbone", model::backbone_name(cfg)}});
    return;
  }
  c10::impl::GenericDict d(c10::StringType::get(), c10::AnyType::get());
  d.insert("trunk", io::tensor_dict(sd));
  const std::string bb = model::backbone_name(cfg);
  d.insert("backbone", bb);
  d.insert("model_name", bb.substr(bb.find('_') + 1));
  if (format == "native") {
    d.insert("format", std::string("instinct-checkpoint"));
    d.insert("version", int64_t(1));
    d.insert("stage", std::string("import"));
    d.insert("step", int64_t(0));
  }
  io::save_object(output, d);
}

std::vector<std::string> inspect(const std::string& path, bool summary_only) {
  std::vector<std::string> out;
  std::string format;
  std::map<std::string, std::pair<int64_t, int64_t>> per_dtype;  // dtype -> (count, bytes)
  int64_t total = 0;
  auto account = [&](const std::string& dtype, int64_t bytes) {
    per_dtype[dtype].first++;
    per_dtype[dtype].second += bytes;
    total += bytes;
  };
  std::vector<std::string> tensor_lines;
  if (path.size() > 12 && path.compare(path.size() - 12, 12, ".safetensors") == 0) {
    format = "safetensors";
    for (const auto& [k, t] : io::load_safetensors(path)) {
      const std::string dt = c10::toString(t.scalar_type());
      const int64_t nb = t.numel() * int64_t(t.element_size());
      account(dt, nb);
      tensor_lines.push_back(k + "  " + dt + "  " + shape_str(t.sizes()) + "  " + std::to_string(nb));
    }
  } else {
    io::LazyArchive a(path);
    const auto& root = a.root();
    std::function<void(const io::PyPtr&, const std::string&)> walk = [&](const io::PyPtr& v, const std::string& at) {
      if (v->is_tensor()) {
        const std::string dt = c10::toString(v->tensor.dtype);
        account(dt, v->tensor.nbytes());
        tensor_lines.push_back(at + "  " + dt + "  " + shape_str(v->tensor.sizes) + "  " + std::to_string(v->tensor.nbytes()));
      } else if (v->is_dict()) {
        for (const auto& [k, x] : v->dict) walk(x, at.empty() ? (k->is_str() ? k->s : "?") : at + "." + (k->is_str() ? k->s : "?"));
      } else if (v->kind == io::PyValue::Kind::List || v->kind == io::PyValue::Kind::Tuple) {
        for (size_t i = 0; i < v->items.size(); ++i) walk(v->items[i], at + "[" + std::to_string(i) + "]");
      }
    };
    walk(root, "");
    auto model = root->is_dict() ? root->get("model") : nullptr;
    auto sd = model && model->is_dict() ? model : root;
    bool sam3 = false, trunk = false;
    if (sd->is_dict())
      for (const auto& [k, v] : sd->dict)
        if (k->is_str()) {
          sam3 |= starts_with(k->s, "detector.");
          trunk |= starts_with(k->s, "detector.backbone.vision_backbone.trunk.model.");
        }
    auto fmt = root->is_dict() ? root->get("format") : nullptr;
    auto tr = root->is_dict() ? root->get("trunk") : nullptr;
    bool trunk_dict = tr && tr->is_dict() && !tr->dict.empty();  // 'trunk' holds name -> tensor
    if (trunk_dict)
      for (const auto& [k, v] : tr->dict) trunk_dict &= k->is_str() && v->is_tensor();
    if (sam3) format = std::string(trunk ? "SAM3 checkpoint with a student trunk (merged)" : "SAM3 checkpoint") +
                       (model ? ", wrapped in 'model'" : ", flat");
    else if (trunk_dict && fmt && fmt->is_str() && fmt->s == "instinct-checkpoint")
      format = "instinct checkpoint (trunk under 'trunk')";
    else if (trunk_dict) format = "InstinctSAM trunk file ('trunk', 'backbone', 'model_name')";
    else format = "torch.save archive (a " + root->type_name() + "; not a trunk, checkpoint or SAM3 file)";
  }
  out.push_back(path + ": " + format + ", " + std::to_string(tensor_lines.size()) + " tensors, " + human_bytes(total));
  if (!summary_only) out.insert(out.end(), tensor_lines.begin(), tensor_lines.end());
  for (const auto& [dt, cb] : per_dtype)
    out.push_back("  " + dt + ": " + std::to_string(cb.first) + " tensors, " + human_bytes(cb.second));
  return out;
}

}  // namespace instinct::merge
