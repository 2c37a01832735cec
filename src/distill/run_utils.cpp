#include "instinct/distill/run_utils.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <regex>
#include <sstream>

#include "common/fault.h"
#include "instinct/common/device.h"
#include "instinct/common/error.h"
#include "instinct/io/archive.h"
#include "instinct/io/atomic_file.h"
#include "instinct/io/sha256.h"
#include "instinct/model/trunk_io.h"
#include "instinct/teacher/bundle.h"

namespace instinct::distill {
namespace fs = std::filesystem;

namespace {

// Step checkpoint files (step_<n>.pt) of a checkpoints folder, oldest first.
std::vector<std::string> step_files(const std::string& dir) {
  std::vector<std::string> out;
  if (!fs::is_directory(dir)) return out;
  static const std::regex name("step_[0-9]+\\.pt");
  for (const auto& e : fs::directory_iterator(dir))
    if (std::regex_match(e.path().filename().string(), name)) out.push_back(e.path().string());
  std::sort(out.begin(), out.end());
  return out;
}

// Step checkpoints of a run directory, oldest first.
std::vector<std::string> step_checkpoints(const std::string& run_dir) { return step_files(run_dir + "/checkpoints"); }

// Temporary files of writers that died mid-write (AtomicFile's `<name>.tmp.<pid>`, best.pt.tmp).
void remove_stale_temporaries(const std::string& run_dir) {
  for (const std::string& dir : {run_dir, run_dir + "/checkpoints"}) {
    if (!fs::is_directory(dir)) continue;
    for (const auto& e : fs::directory_iterator(dir)) {
      const std::string name = e.path().filename().string();
      const bool stale = name == "best.pt.tmp" ||
                         (io::temp_file_pid(name) >= 0 && !io::temp_writer_alive(e.path().string()));
      std::error_code ec;
      if (stale && e.is_regular_file(ec) && fs::remove(e.path(), ec))
        spdlog::warn("removed {}, left by a writer that was killed mid-write", e.path().string());
    }
  }
}

void digest_value(io::Sha256& h, const c10::IValue& v) {
  auto text = [&](const std::string& s) {
    const uint64_t n = s.size();
    h.update(&n, sizeof n);
    h.update(s);
  };
  if (v.isGenericDict()) {
    text("dict");
    for (const auto& kv : v.toGenericDict()) {
      if (kv.key().isString() && kv.key().toStringRef() == "checksum") continue;
      digest_value(h, kv.key());
      digest_value(h, kv.value());
    }
  } else if (v.isList()) {
    text("list");
    for (const auto& x : v.toListRef()) digest_value(h, x);
  } else if (v.isTuple()) {
    text("tuple");
    for (const auto& x : v.toTupleRef().elements()) digest_value(h, x);
  } else if (v.isTensor()) {
    const auto t = v.toTensor().cpu().contiguous();
    text(std::string("tensor ") + c10::toString(t.scalar_type()));
    for (auto s : t.sizes()) h.update(&s, sizeof s);
    h.update(t.data_ptr(), t.nbytes());
  } else if (v.isString()) {
    text("str " + v.toStringRef());
  } else if (v.isInt()) {
    const int64_t i = v.toInt();
    text("int");
    h.update(&i, sizeof i);
  } else if (v.isDouble()) {
    const double d = v.toDouble();
    text("float");
    h.update(&d, sizeof d);
  } else if (v.isBool()) {
    text(v.toBool() ? "true" : "false");
  } else {
    text(v.isNone() ? "none" : v.tagKind());
  }
}

}  // namespace

std::string checkpoint_digest(const c10::IValue& checkpoint) {
  io::Sha256 h;
  digest_value(h, checkpoint);
  return "sha256:" + h.hex_digest();
}

c10::IValue read_checkpoint(const std::string& path) {
  auto obj = io::load_object(path);
  const auto& d = obj.toGenericDict();
  if (d.contains("checksum")) {
    const std::string want = d.at("checksum").toStringRef(), got = checkpoint_digest(obj);
    INSTINCT_CHECK(got == want, path, ": checksum mismatch (stored ", want.substr(0, 19), "..., contents ",
                   got.substr(0, 19), "...): the file was altered or damaged after it was written");
  }
  return obj;
}

RunContext RunContext::open(const std::string& dir, const std::string& device, const std::string& precision,
                            int threads, const std::string& resume) {
  RunContext rc;
  INSTINCT_CHECK(!dir.empty(), "run_dir must not be empty");
  rc.dir = dir;
  set_cpu_threads(threads);
  rc.device = resolve_device(device);
  if (precision == "auto") rc.autocast = rc.device.is_cuda();
  else if (precision == "bf16") {
    INSTINCT_CHECK(rc.device.is_cuda(), "precision bf16 needs a CUDA device (device is ", rc.device.str(), ")");
    rc.autocast = true;
  } else INSTINCT_CHECK(precision == "fp32", "precision '", precision, "' is unknown; valid: auto, fp32, bf16");
  remove_stale_temporaries(dir);
  const auto steps = step_checkpoints(dir);
  const std::string latest = steps.empty() ? std::string() : steps.back();
  if (resume == "auto") {
    rc.resume_candidates.assign(steps.rbegin(), steps.rend());
    rc.resume_from = latest;
  }
  else if (resume == "never") {
    INSTINCT_CHECK(latest.empty(), "run_dir '", dir, "' already holds checkpoint ", latest,
                   "; set checkpoint.resume=auto to continue it or choose another run_dir");
  } else {
    INSTINCT_CHECK(fs::exists(resume), "checkpoint.resume: file '", resume, "' does not exist");
    rc.resume_from = resume;
    rc.resume_candidates = {resume};
  }
  const char* wait = std::getenv("OMP_WAIT_POLICY");
  spdlog::info("run dir {} | device {} | precision {} | {} CPU threads (OMP_WAIT_POLICY {})", dir, rc.device.str(),
               rc.autocast ? "bf16 autocast" : "fp32", at::get_num_threads(), wait ? wait : "default");
  return rc;
}

void RunContext::write_resolved_config(const std::string& yaml) const {
  std::error_code ec;
  fs::create_directories(dir + "/checkpoints", ec);
  INSTINCT_CHECK(!ec, "run_dir '", dir, "' cannot be created: ", ec.message());
  io::write_file_atomic(dir + "/config.yaml", yaml);
}

void resolve_student_shape(model::VitConfig& s, const teacher::BundleInfo& info) {
  s = model::resolve_preset([&] {
    auto c = s;
    if (c.out_channels == 0) c.out_channels = info.trunk_channels;
    if (c.out_grid == 0) c.out_grid = info.trunk_grid;
    return c;
  }());
  INSTINCT_CHECK(s.out_channels == info.trunk_channels, "student.out_channels ", s.out_channels,
                 " disagrees with the teacher's trunk channels ", info.trunk_channels, " in ", info.dir, "/bundle.json");
  INSTINCT_CHECK(s.out_grid == info.trunk_grid, "student.out_grid ", s.out_grid, " disagrees with the teacher's trunk grid ",
                 info.trunk_grid, " in ", info.dir, "/bundle.json");
}

std::vector<std::pair<std::string, at::Tensor>> trainable_parameters(const torch::nn::Module& m) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (auto& kv : model::state_dict(m))
    if (kv.second.requires_grad()) out.push_back(kv);
  return out;
}

std::string dataset_fingerprint(const data::Dataset& ds) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < ds.size(); ++i)
    for (char c : ds.path(i) + '\n') h = (h ^ uint8_t(c)) * 1099511628211ull;
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", (unsigned long long)h);
  return buf;
}

CheckpointKeeper::CheckpointKeeper(std::string run_dir, int keep_last, bool keep_best)
    : dir_(std::move(run_dir) + "/checkpoints"), keep_last_(std::max(1, keep_last)), keep_best_(keep_best) {}

void CheckpointKeeper::save(const TrainState& st, model::StudentTrunkImpl& student, const AdamW& opt, const Ema* ema,
                            model::StudentTrunkImpl* ema_model, const std::string& config_yaml,
                            const std::string& stage, bool best,
                            const std::vector<std::pair<std::string, at::Tensor>>& heads) {
  c10::impl::GenericDict d(c10::StringType::get(), c10::AnyType::get());
  d.insert("trunk", io::tensor_dict(model::state_dict(student)));
  const std::string bb = model::backbone_name(student.config());
  d.insert("backbone", bb);
  d.insert("model_name", bb.substr(bb.find('_') + 1));
  d.insert("format", std::string("instinct-checkpoint"));
  d.insert("version", int64_t(1));
  d.insert("stage", stage);
  d.insert("step", st.step);
  d.insert("epoch", st.epoch);
  d.insert("batch_in_epoch", st.batch_in_epoch);
  d.insert("images_per_batch", st.images_per_batch);
  // Floats as 0-dim tensors: Python 1.13's weights_only unpickler rejects the float opcode.
  d.insert("best_metric", torch::tensor(st.best_metric, torch::kFloat64));
  d.insert("optimizer", opt.state());
  if (ema && ema_model) {
    d.insert("ema", io::tensor_dict(model::state_dict(*ema_model)));
    d.insert("ema_updates", ema->updates());
  }
  {
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    d.insert("rng", gen.get_state());
  }
  d.insert("config", config_yaml);
  if (!heads.empty()) {
    io::TensorList h;
    for (const auto& [k, v] : heads) h.emplace_back(k, v.detach().cpu());
    d.insert("heads", io::tensor_dict(h));
  }
  d.insert("checksum", checkpoint_digest(d));
  char name[64];
  std::snprintf(name, sizeof name, "step_%08lld.pt", (long long)st.step);
  const std::string path = dir_ + "/" + name;
  io::save_object(path, d);
  fault_point("checkpoint.saved");
  if (best && keep_best_) {
    std::error_code ec;
    const std::string tmp = dir_ + "/best.pt.tmp";
    fs::copy_file(path, tmp, fs::copy_options::overwrite_existing, ec);
    if (!ec) fs::rename(tmp, dir_ + "/best.pt", ec);
    if (ec) spdlog::warn("could not update {}/best.pt: {}", dir_, ec.message());
  }
  const auto steps = step_files(dir_);
  for (size_t i = 0; i + size_t(keep_last_) < steps.size(); ++i) fs::remove(steps[i]);
}

std::string latest_checkpoint(const std::string& run_dir) {
  const auto all = step_checkpoints(run_dir);
  return all.empty() ? std::string() : all.back();
}

TrainState load_checkpoint(const std::string& path, model::StudentTrunkImpl& student, AdamW& opt, Ema* ema,
                           model::StudentTrunkImpl* ema_model,
                           const std::vector<std::pair<std::string, at::Tensor>>& heads) {
  return restore_checkpoint(read_checkpoint(path), path, student, opt, ema, ema_model, heads);
}

TrainState restore_checkpoint(const c10::IValue& obj, const std::string& path, model::StudentTrunkImpl& student,
                              AdamW& opt, Ema* ema, model::StudentTrunkImpl* ema_model,
                              const std::vector<std::pair<std::string, at::Tensor>>& heads) {
  auto get = [&](const char* k) { return io::dict_get(obj, k, path); };
  model::load_state_dict_strict(student, io::to_tensor_list(get("trunk"), path + " ['trunk']"), path);
  opt.load_state(get("optimizer"), path);
  TrainState st;
  st.step = get("step").toInt();
  st.epoch = get("epoch").toInt();
  st.batch_in_epoch = get("batch_in_epoch").toInt();
  if (obj.toGenericDict().contains("images_per_batch")) st.images_per_batch = get("images_per_batch").toInt();
  st.best_metric = get("best_metric").toTensor().item<double>();
  if (ema && ema_model) {
    INSTINCT_CHECK(obj.toGenericDict().contains("ema"), path, ": EMA is enabled but the checkpoint has no 'ema' weights");
    model::load_state_dict_strict(*ema_model, io::to_tensor_list(get("ema"), path + " ['ema']"), path);
    ema->set_updates(get("ema_updates").toInt());
  }
  if (!heads.empty()) {
    INSTINCT_CHECK(obj.toGenericDict().contains("heads"), path, ": the checkpoint has no 'heads' (written by another trainer?)");
    std::map<std::string, at::Tensor> saved;
    for (auto& [k, v] : io::to_tensor_list(get("heads"), path + " ['heads']")) saved[k] = v;
    torch::NoGradGuard ng;
    for (const auto& [k, v] : heads) {
      auto it = saved.find(k);
      INSTINCT_CHECK(it != saved.end(), path, ": 'heads' has no '", k, "'");
      INSTINCT_CHECK(it->second.sizes() == v.sizes(), path, ": heads['", k, "'] has shape ", it->second.sizes(),
                     ", expected ", v.sizes());
      v.copy_(it->second);
    }
  }
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(get("rng").toTensor());
  return st;
}

MetricsLog::MetricsLog(const std::string& path, int64_t resume_step, bool resuming) {
  if (path.empty()) return;  // a rank other than 0: no file
  path_ = path;
  std::string kept;
  if (resuming && fs::exists(path)) {
    std::ifstream in(path);
    for (std::string line; std::getline(in, line);) {
      if (line.empty()) continue;
      try {
        if (nlohmann::json::parse(line).value("step", int64_t(0)) <= resume_step) kept += line + "\n";
      } catch (const std::exception&) {  // a torn last line from a killed run
      }
    }
  }
  io::write_file_atomic(path, kept);
  out_.open(path, std::ios::app);
  INSTINCT_CHECK(out_.good(), "cannot open '", path, "' for writing");
}

void MetricsLog::write(const nlohmann::json& row) {
  if (!out_.is_open()) return;
  const std::string line = row.dump() + "\n";
  struct Torn { std::ofstream* out; const std::string* line; } torn{&out_, &line};
  fault_point("metrics.row", [](void* a) {
    auto* t = static_cast<Torn*>(a);
    t->out->write(t->line->data(), std::streamsize(t->line->size() / 2));
    t->out->flush();
  }, &torn);
  out_.write(line.data(), std::streamsize(line.size()));
  out_.flush();
  INSTINCT_CHECK(out_.good(), path_, ": writing a metrics row failed: ", std::strerror(errno), " (disk full?)");
}

PhaseTimer::PhaseTimer(bool sync, const at::Device& device) : sync_(sync && device.is_cuda()) {}

double PhaseTimer::now() const {
  if (sync_) torch::cuda::synchronize();
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

void PhaseTimer::start() { t_ = now(); }

void PhaseTimer::lap(const char* name) {
  const double n = now();
  auto it = std::find_if(phases_.begin(), phases_.end(), [&](const auto& kv) { return kv.first == name; });
  if (it == phases_.end()) {
    phases_.emplace_back(name, 0.0);
    it = phases_.end() - 1;
  }
  it->second += n - t_;
  t_ = n;
}

void PhaseTimer::write(nlohmann::json& row, int64_t batches) {
  double total = 0;
  for (const auto& kv : phases_) total += kv.second;
  for (auto& [name, v] : phases_) {
    row["time_" + name] = total > 0 ? v / total : 0.0;
    row["ms_" + name] = 1e3 * v / double(std::max<int64_t>(batches, 1));
    v = 0;
  }
}

}  // namespace instinct::distill
