#include "instinct/distill/optim.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <tuple>

#include "instinct/common/error.h"
#include "compat.h"
#include "instinct/model/vit.h"

namespace instinct::distill {

double lr_at(int64_t step, int64_t total, int64_t warmup, double peak, double warmup_lr, double min_lr) {
  if (step < warmup) return warmup_lr + (peak - warmup_lr) * double(step) / double(std::max<int64_t>(warmup, 1));
  const double span = double(std::max<int64_t>(total - warmup, 1));
  const double t = std::min(1.0, double(step - warmup) / span);
  return min_lr + 0.5 * (peak - min_lr) * (1.0 + std::cos(M_PI * t));
}

namespace {
bool no_decay(const std::string& name, const at::Tensor& p) {
  auto ends = [&](const std::string& s) {
    return name.size() >= s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0;
  };
  return p.dim() <= 1 || ends("bias") || ends("pos_embed") || ends("cls_token");
}

std::vector<at::Tensor> pick(const std::vector<at::Tensor>& v, const std::vector<size_t>& idx) {
  std::vector<at::Tensor> out;
  out.reserve(idx.size());
  for (size_t i : idx) out.push_back(v[i]);
  return out;
}
}  // namespace

const char* kernel_name(Kernel k) { return k == Kernel::loop ? "loop" : k == Kernel::foreach ? "foreach" : "fused"; }

bool fused_adamw_available() { return INSTINCT_TORCH_AT_LEAST(2, 1); }

Kernel resolve_kernel(const std::string& name, c10::DeviceType device_type) {
  if (name == "auto") {  // on CPU the per-parameter loop keeps each tensor in cache across its ops
    if (device_type != c10::DeviceType::CUDA) return Kernel::loop;
    return fused_adamw_available() ? Kernel::fused : Kernel::foreach;
  }
  if (name == "loop") return Kernel::loop;
  if (name == "foreach") return Kernel::foreach;
  INSTINCT_CHECK(name == "fused", "optim.kernel = '", name, "': expected auto, fused, foreach or loop");
  INSTINCT_CHECK(fused_adamw_available(), "optim.kernel = fused: this LibTorch (", TORCH_VERSION,
                 ") has no _fused_adamw_ (needs >= 2.1); use foreach");
  return Kernel::fused;
}

AdamW::AdamW(std::vector<std::pair<std::string, at::Tensor>> named, const OptimConfig& cfg)
    : params_(std::move(named)), cfg_(cfg) {
  kernel_ = resolve_kernel(cfg.kernel, params_.empty() ? c10::DeviceType::CPU : params_[0].second.device().type());
  std::vector<std::tuple<bool, at::ScalarType, at::Device>> keys;
  for (size_t i = 0; i < params_.size(); ++i) {
    const auto& p = params_[i].second;
    decay_.push_back(!no_decay(params_[i].first, p));
    exp_avg_.push_back(torch::zeros_like(p, at::MemoryFormat::Preserve));
    exp_avg_sq_.push_back(torch::zeros_like(p, at::MemoryFormat::Preserve));
    if (kernel_ == Kernel::fused) step_t_.push_back(torch::zeros({}, p.options().dtype(at::kFloat)));
    const auto key = std::make_tuple(bool(decay_[i]), p.scalar_type(), p.device());
    auto it = std::find(keys.begin(), keys.end(), key);
    if (it == keys.end()) {
      keys.push_back(key);
      groups_.emplace_back();
      it = keys.end() - 1;
    }
    groups_[size_t(it - keys.begin())].push_back(i);
  }
}

void AdamW::step(double lr) {
  torch::NoGradGuard ng;
  ++step_;
  const double b1 = cfg_.beta1, b2 = cfg_.beta2, eps = cfg_.eps;
  const double bc1 = 1.0 - std::pow(b1, double(step_));
  const double bc2 = 1.0 - std::pow(b2, double(step_));
  const double step_size = lr / bc1;
  const double bc2_sqrt = std::sqrt(bc2);
  if (kernel_ == Kernel::loop) {
    for (size_t i = 0; i < params_.size(); ++i) {
      auto& p = params_[i].second;
      const auto& g = p.grad();
      if (!g.defined()) continue;
      if (decay_[i] && cfg_.weight_decay != 0) p.mul_(1.0 - lr * cfg_.weight_decay);
      exp_avg_[i].mul_(b1).add_(g, 1.0 - b1);
      exp_avg_sq_[i].mul_(b2).addcmul_(g, g, 1.0 - b2);
      auto denom = (exp_avg_sq_[i].sqrt() / bc2_sqrt).add_(eps);
      p.addcdiv_(exp_avg_[i], denom, -step_size);
    }
    return;
  }
  for (const auto& group : groups_) {
    std::vector<size_t> idx;
    for (size_t i : group)
      if (params_[i].second.grad().defined()) idx.push_back(i);
    if (idx.empty()) continue;
    std::vector<at::Tensor> p, g;
    for (size_t i : idx) {
      p.push_back(params_[i].second);
      g.push_back(params_[i].second.grad());
    }
    auto m = pick(exp_avg_, idx), v = pick(exp_avg_sq_, idx);
    const double wd = decay_[idx[0]] ? cfg_.weight_decay : 0.0;
    if (kernel_ == Kernel::fused) {
#if INSTINCT_TORCH_AT_LEAST(2, 1)
      auto steps = pick(step_t_, idx);
      at::_foreach_add_(steps, 1.0);
      at::_fused_adamw_(p, g, m, v, {}, steps, lr, b1, b2, wd, eps, /*amsgrad=*/false, /*maximize=*/false);
#endif
      continue;
    }
    if (wd != 0) at::_foreach_mul_(p, 1.0 - lr * wd);
    at::_foreach_mul_(m, b1);
    at::_foreach_add_(m, g, 1.0 - b1);
    at::_foreach_mul_(v, b2);
    at::_foreach_addcmul_(v, g, g, 1.0 - b2);
    auto denom = at::_foreach_sqrt(v);
    at::_foreach_div_(denom, bc2_sqrt);
    at::_foreach_add_(denom, eps);
    at::_foreach_addcdiv_(p, m, denom, -step_size);
  }
}

void AdamW::zero_grad() {
  for (auto& kv : params_)
    if (kv.second.grad().defined()) kv.second.mutable_grad() = at::Tensor();
}

c10::IValue AdamW::state() const {
  c10::Dict<std::string, at::Tensor> m, v;
  for (size_t i = 0; i < params_.size(); ++i) {
    m.insert(params_[i].first, exp_avg_[i].detach().cpu());
    v.insert(params_[i].first, exp_avg_sq_[i].detach().cpu());
  }
  c10::impl::GenericDict d(c10::StringType::get(), c10::AnyType::get());
  d.insert("step", step_);
  d.insert("exp_avg", m);
  d.insert("exp_avg_sq", v);
  return d;
}

void AdamW::load_state(const c10::IValue& state, const std::string& source) {
  INSTINCT_CHECK(state.isGenericDict(), source, ": optimizer state is not a dict");
  auto d = state.toGenericDict();
  for (const char* k : {"step", "exp_avg", "exp_avg_sq"})
    INSTINCT_CHECK(d.contains(k), source, ": optimizer state lacks '", k, "'");
  auto m = d.at("exp_avg").toGenericDict();
  auto v = d.at("exp_avg_sq").toGenericDict();
  torch::NoGradGuard ng;
  for (size_t i = 0; i < params_.size(); ++i) {
    const auto& name = params_[i].first;
    INSTINCT_CHECK(m.contains(name) && v.contains(name), source, ": optimizer state lacks parameter '", name, "'");
    auto a = m.at(name).toTensor(), b = v.at(name).toTensor();
    INSTINCT_CHECK(a.sizes() == exp_avg_[i].sizes() && b.sizes() == exp_avg_sq_[i].sizes(), source,
                   ": optimizer state for '", name, "' has shape ", a.sizes(), ", expected ", exp_avg_[i].sizes());
    exp_avg_[i].copy_(a);
    exp_avg_sq_[i].copy_(b);
  }
  step_ = d.at("step").toInt();
  for (auto& t : step_t_) t.fill_(double(step_));
}

at::Tensor clip_grad_norm(const std::vector<std::pair<std::string, at::Tensor>>& params, double max_norm, Kernel kernel) {
  torch::NoGradGuard ng;
  std::vector<at::Tensor> grads, f32;
  for (const auto& kv : params) {
    if (!kv.second.grad().defined()) continue;
    grads.push_back(kv.second.grad());
    if (kernel != Kernel::loop && grads.back().scalar_type() == at::kFloat) f32.push_back(grads.back());
  }
  if (grads.empty()) return torch::zeros({});
  std::vector<at::Tensor> norms;
  if (!f32.empty()) {
    // _foreach_norm wants one device; gradients of a trainer share it.
    for (auto& n : at::_foreach_norm(f32, 2)) norms.push_back(n);
  }
  for (const auto& g : grads)
    if (kernel == Kernel::loop || g.scalar_type() != at::kFloat) norms.push_back(g.detach().to(at::kFloat).norm(2));
  auto total = torch::stack(norms).norm(2);
  if (max_norm > 0) {
    auto coef = (max_norm / (total + 1e-6)).clamp_max(1.0);
#if INSTINCT_TORCH_AT_LEAST(2, 1)
    if (!f32.empty()) at::_foreach_mul_(f32, coef);
    for (auto& g : grads)
      if (kernel == Kernel::loop || g.scalar_type() != at::kFloat) g.mul_(coef.to(g.dtype()));
#else
    for (auto& g : grads) g.mul_(coef.to(g.dtype()));
#endif
  }
  return total;
}

Ema::Ema(torch::nn::Module& source, torch::nn::Module& shadow, const EmaConfig& cfg, Kernel kernel) : cfg_(cfg) {
  auto s = model::state_dict(source), t = model::state_dict(shadow);
  INSTINCT_ASSERT(s.size() == t.size());
  torch::NoGradGuard ng;
  std::vector<std::pair<at::ScalarType, at::Device>> keys;
  for (size_t i = 0; i < s.size(); ++i) {
    INSTINCT_ASSERT(s[i].first == t[i].first);
    auto& src = s[i].second;
    auto& dst = t[i].second;
    dst.copy_(src);
    pairs_.emplace_back(src, dst);
    const bool groupable = kernel != Kernel::loop && at::isFloatingType(dst.scalar_type()) &&
                           src.scalar_type() == dst.scalar_type() && src.device() == dst.device();
    if (!groupable) {
      loose_.push_back(i);
      continue;
    }
    const auto key = std::make_pair(dst.scalar_type(), dst.device());
    auto it = std::find(keys.begin(), keys.end(), key);
    if (it == keys.end()) {
      keys.push_back(key);
      group_src_.emplace_back();
      group_dst_.emplace_back();
      it = keys.end() - 1;
    }
    group_src_[size_t(it - keys.begin())].push_back(src);
    group_dst_[size_t(it - keys.begin())].push_back(dst);
  }
}

double Ema::current_decay() const {
  if (!cfg_.warmup) return cfg_.decay;
  return std::min(cfg_.decay, 1.0 - std::pow(1.0 + double(updates_), -0.75));
}

void Ema::update() {
  torch::NoGradGuard ng;
  const double d = current_decay();
  for (size_t g = 0; g < group_dst_.size(); ++g) {
    at::_foreach_mul_(group_dst_[g], d);
    at::_foreach_add_(group_dst_[g], group_src_[g], 1.0 - d);
  }
  for (size_t i : loose_) {
    auto& [src, dst] = pairs_[i];
    if (at::isFloatingType(dst.scalar_type())) dst.mul_(d).add_(src.detach().to(dst.dtype()), 1.0 - d);
    else dst.copy_(src);
  }
  ++updates_;
}

}  // namespace instinct::distill
