#include "instinct/distill/run_utils.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <regex>
#include <sstream>

#include "instinct/common/device.h"
#include "instinct/common/error.h"
#include "instinct/io/archive.h"
#include "instinct/io/atomic_file.h"
#include "instinct/model/trunk_io.h"
#include "instinct/teacher/bundle.h"

namespace instinct::distill {
namespace fs = std::filesystem;

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
  const std::string latest = latest_checkpoint(dir);
  if (resume == "auto") rc.resume_from = latest;
  else if (resume == "never") {
    INSTINCT_CHECK(latest.empty(), "run_dir '", dir, "' already holds checkpoint ", latest,
                   "; set checkpoint.resume=auto to continue it or choose another run_dir");
  } else {
    INSTINCT_CHECK(fs::exists(resume), "checkpoint.resume: file '", resume, "' does not exist");
    rc.resume_from = resume;
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
    for (const auto& [k, v] : heads) h.emplace_back(k, v.detach());
    d.insert("heads", io::tensor_dict(h));
  }
  char name[64];
  std::snprintf(name, sizeof name, "step_%08lld.pt", (long long)st.step);
  const std::string path = dir_ + "/" + name;
  io::save_object(path, d);
  if (best && keep_best_) {
    std::error_code ec;
    const std::string tmp = dir_ + "/best.pt.tmp";
    fs::copy_file(path, tmp, fs::copy_options::overwrite_existing, ec);
    if (!ec) fs::rename(tmp, dir_ + "/best.pt", ec);
    if (ec) spdlog::warn("could not update {}/best.pt: {}", dir_, ec.message());
  }
  std::vector<std::string> steps;
  for (const auto& e : fs::directory_iterator(dir_))
    if (std::regex_match(e.path().filename().string(), std::regex("step_[0-9]+\\.pt"))) steps.push_back(e.path().string());
  std::sort(steps.begin(), steps.end());
  for (size_t i = 0; i + size_t(keep_last_) < steps.size(); ++i) fs::remove(steps[i]);
}

std::string latest_checkpoint(const std::string& run_dir) {
  const std::string dir = run_dir + "/checkpoints";
  std::string best;
  if (!fs::is_directory(dir)) return best;
  for (const auto& e : fs::directory_iterator(dir)) {
    const auto name = e.path().filename().string();
    if (std::regex_match(name, std::regex("step_[0-9]+\\.pt")) && e.path().string() > best) best = e.path().string();
  }
  return best;
}

TrainState load_checkpoint(const std::string& path, model::StudentTrunkImpl& student, AdamW& opt, Ema* ema,
                           model::StudentTrunkImpl* ema_model,
                           const std::vector<std::pair<std::string, at::Tensor>>& heads) {
  auto obj = io::load_object(path);
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
  out_ << row.dump() << "\n";
  out_.flush();
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
