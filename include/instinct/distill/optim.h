#pragma once
// Optimisation pieces shared by every trainer: AdamW with named parameter groups and serialisable
// state, the warm-up + cosine learning-rate schedule, gradient clipping without host syncs, and an
// exponential moving average of weights.
#include <ATen/core/ivalue.h>
#include <torch/nn/module.h>

#include <string>
#include <utility>
#include <vector>

namespace instinct::distill {

/// Optimiser and schedule settings (EfficientSAM3 stage-1 defaults, see docs/stageA.md).
struct OptimConfig {
  double base_lr = 1e-3;
  int base_batch = 512;
  double weight_decay = 0.01;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double warmup_lr = 1e-6;
  double min_lr = 1e-5;
  double epochs = 50;
  double warmup_epochs = 5;
  int64_t max_steps = 0;
  int64_t warmup_steps = 0;
  double grad_clip = 5.0;
  int accum_steps = 1;
  std::string kernel = "auto";
  template <class V>
  void visit(V& v) {
    v("base_lr", base_lr, "peak LR at base_batch, scaled linearly by global batch / base_batch");
    v("base_batch", base_batch, "batch size that base_lr refers to");
    v("weight_decay", weight_decay, "AdamW decoupled weight decay (no decay on 1-D params, biases, pos/cls)");
    v("beta1", beta1, "AdamW beta1");
    v("beta2", beta2, "AdamW beta2");
    v("eps", eps, "AdamW epsilon");
    v("warmup_lr", warmup_lr, "LR at step 0 (linear warm-up from here to the peak)");
    v("min_lr", min_lr, "LR at the end of the cosine decay");
    v("epochs", epochs, "training length in epochs (ignored when max_steps > 0)");
    v("warmup_epochs", warmup_epochs, "warm-up length in epochs (ignored when warmup_steps > 0)");
    v("max_steps", max_steps, "optimizer steps to run; 0 = derive from epochs");
    v("warmup_steps", warmup_steps, "warm-up steps; 0 = derive from warmup_epochs");
    v("grad_clip", grad_clip, "clip the global gradient norm to this (0 = off)");
    v("accum_steps", accum_steps, "micro-batches accumulated per optimizer step");
    v("kernel", kernel, "auto (CUDA: fused AdamW with torch >= 2.1, else foreach; CPU: loop) | fused | foreach (multi-tensor) | loop (per parameter)");
  }
};

/// Learning rate at optimizer step `step` (0-based): linear warm-up from warmup_lr to peak over
/// warmup_steps, then cosine from peak to min_lr at total_steps.
double lr_at(int64_t step, int64_t total_steps, int64_t warmup_steps, double peak, double warmup_lr,
             double min_lr);

/// The update kernels behind AdamW, clip_grad_norm and Ema.
enum class Kernel {
  loop,     ///< one small op sequence per parameter (any LibTorch)
  foreach,  ///< multi-tensor `_foreach_*` ops over groups of same-dtype/device tensors (torch.optim's foreach=True)
  fused     ///< `at::_fused_adamw_` (torch.optim's fused=True; LibTorch >= 2.1)
};

/// Resolves OptimConfig::kernel for parameters on `device_type`: "auto" is fused on CUDA when this
/// LibTorch has `_fused_adamw_` (else foreach) and loop on CPU, where it keeps each tensor in cache
/// across its ops. Throws for an unknown name or an unavailable kernel.
Kernel resolve_kernel(const std::string& name, c10::DeviceType device_type);

/// "loop", "foreach" or "fused".
const char* kernel_name(Kernel k);

/// Whether this LibTorch build has `at::_fused_adamw_`.
bool fused_adamw_available();

/// AdamW (torch.optim.AdamW semantics, decoupled decay) over named parameters. Parameters whose
/// name ends in "bias", "pos_embed", "cls_token" or that are 1-D get no weight decay. All three
/// kernels compute the same update; loop and foreach are bitwise identical on CPU.
class AdamW {
 public:
  /// The kernel comes from cfg.kernel, resolved for the device of the first parameter.
  AdamW(std::vector<std::pair<std::string, at::Tensor>> named_params, const OptimConfig& cfg);
  /// One update with learning rate `lr` for every parameter that has a gradient.
  void step(double lr);
  void zero_grad();
  /// {'step': int, 'exp_avg': {name: t}, 'exp_avg_sq': {name: t}} for checkpoints.
  c10::IValue state() const;
  /// Restores state(); errors name the missing parameter or shape mismatch.
  void load_state(const c10::IValue& state, const std::string& source);
  int64_t steps() const { return step_; }
  const std::vector<std::pair<std::string, at::Tensor>>& params() const { return params_; }
  Kernel kernel() const { return kernel_; }

 private:
  std::vector<std::pair<std::string, at::Tensor>> params_;
  std::vector<bool> decay_;
  std::vector<at::Tensor> exp_avg_, exp_avg_sq_;
  std::vector<at::Tensor> step_t_;  // fused only: per-parameter step count (float32, on the device)
  std::vector<std::vector<size_t>> groups_;  // same decay flag, dtype and device
  OptimConfig cfg_;
  Kernel kernel_ = Kernel::loop;
  int64_t step_ = 0;
};

/// Scales gradients so their global L2 norm is at most max_norm; returns the pre-clip norm as a
/// 0-dim tensor on the parameters' device (no host synchronisation). Kernel::loop computes one
/// norm per gradient; foreach and fused use `_foreach_norm` (and `_foreach_mul_` by a device
/// scalar on LibTorch >= 2.1).
at::Tensor clip_grad_norm(const std::vector<std::pair<std::string, at::Tensor>>& params, double max_norm,
                          Kernel kernel = Kernel::loop);

/// EMA settings.
struct EmaConfig {
  bool enabled = false;
  double decay = 0.9998;
  bool warmup = true;
  template <class V>
  void visit(V& v) {
    v("enabled", enabled, "keep an EMA of the student weights (evaluated and saved separately)");
    v("decay", decay, "final decay (horizon ~ 1/(1-decay) steps)");
    v("warmup", warmup, "timm-style warm-up of the decay: min(decay, 1 - (1+k)^-0.75)");
  }
};

/// Maintains `shadow` (a module of the same architecture) as the EMA of `source`: floating
/// parameters and buffers are averaged in fp32, integer buffers copied. Kernel::foreach / fused
/// update same-dtype groups with two multi-tensor ops (bitwise equal to the loop).
class Ema {
 public:
  Ema(torch::nn::Module& source, torch::nn::Module& shadow, const EmaConfig& cfg, Kernel kernel = Kernel::loop);
  void update();
  double current_decay() const;
  int64_t updates() const { return updates_; }
  void set_updates(int64_t n) { updates_ = n; }

 private:
  std::vector<std::pair<at::Tensor, at::Tensor>> pairs_;  // (source, shadow)
  std::vector<std::vector<at::Tensor>> group_src_, group_dst_;  // foreach groups (same dtype and device)
  std::vector<size_t> loose_;  // pairs updated one by one (dtype conversion, integer buffers)
  EmaConfig cfg_;
  int64_t updates_ = 0;
};

}  // namespace instinct::distill
