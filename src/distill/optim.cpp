#include "instinct/distill/optim.h"

#include <torch/torch.h>

#include <cmath>

#include "instinct/common/error.h"
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
}  // namespace

AdamW::AdamW(std::vector<std::pair<std::string, at::Tensor>> named, const OptimConfig& cfg)
    : params_(std::move(named)), cfg_(cfg) {
  for (auto& kv : params_) {
    decay_.push_back(!no_decay(kv.first, kv.second));
    exp_avg_.push_back(torch::zeros_like(kv.second, at::MemoryFormat::Preserve));
    exp_avg_sq_.push_back(torch::zeros_like(kv.second, at::MemoryFormat::Preserve));
  }
}

void AdamW::step(double lr) {
  torch::NoGradGuard ng;
  ++step_;
  const double bc1 = 1.0 - std::pow(cfg_.beta1, double(step_));
  const double bc2 = 1.0 - std::pow(cfg_.beta2, double(step_));
  const double step_size = lr / bc1;
  const double bc2_sqrt = std::sqrt(bc2);
  for (size_t i = 0; i < params_.size(); ++i) {
    auto& p = params_[i].second;
    const auto& g = p.grad();
    if (!g.defined()) continue;
    if (decay_[i] && cfg_.weight_decay != 0) p.mul_(1.0 - lr * cfg_.weight_decay);
    exp_avg_[i].mul_(cfg_.beta1).add_(g, 1.0 - cfg_.beta1);
    exp_avg_sq_[i].mul_(cfg_.beta2).addcmul_(g, g, 1.0 - cfg_.beta2);
    auto denom = (exp_avg_sq_[i].sqrt() / bc2_sqrt).add_(cfg_.eps);
    p.addcdiv_(exp_avg_[i], denom, -step_size);
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
}

at::Tensor clip_grad_norm(const std::vector<std::pair<std::string, at::Tensor>>& params, double max_norm) {
  torch::NoGradGuard ng;
  std::vector<at::Tensor> norms;
  for (const auto& kv : params)
    if (kv.second.grad().defined()) norms.push_back(kv.second.grad().detach().to(at::kFloat).norm(2));
  if (norms.empty()) return torch::zeros({});
  auto total = torch::stack(norms).norm(2);
  if (max_norm > 0) {
    auto coef = (max_norm / (total + 1e-6)).clamp_max(1.0);
    for (const auto& kv : params)
      if (kv.second.grad().defined()) kv.second.grad().mul_(coef.to(kv.second.grad().dtype()));
  }
  return total;
}

Ema::Ema(torch::nn::Module& source, torch::nn::Module& shadow, const EmaConfig& cfg) : cfg_(cfg) {
  auto s = model::state_dict(source), t = model::state_dict(shadow);
  INSTINCT_ASSERT(s.size() == t.size());
  torch::NoGradGuard ng;
  for (size_t i = 0; i < s.size(); ++i) {
    INSTINCT_ASSERT(s[i].first == t[i].first);
    t[i].second.copy_(s[i].second);
    pairs_.emplace_back(s[i].second, t[i].second);
  }
}

double Ema::current_decay() const {
  if (!cfg_.warmup) return cfg_.decay;
  return std::min(cfg_.decay, 1.0 - std::pow(1.0 + double(updates_), -0.75));
}

void Ema::update() {
  torch::NoGradGuard ng;
  const double d = current_decay();
  for (auto& [src, dst] : pairs_) {
    if (at::isFloatingType(dst.scalar_type())) dst.mul_(d).add_(src.detach().to(dst.dtype()), 1.0 - d);
    else dst.copy_(src);
  }
  ++updates_;
}

}  // namespace instinct::distill
