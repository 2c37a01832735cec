#pragma once
// The single place where LibTorch version differences live (Debian 1.13 CPU vs pip 2.x CUDA wheels).
// Everything else in the project calls these wrappers instead of version-specific APIs.
#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <torch/version.h>

#define INSTINCT_TORCH_2 (TORCH_VERSION_MAJOR >= 2)
#define INSTINCT_TORCH_AT_LEAST(maj, min) \
  (TORCH_VERSION_MAJOR > (maj) || (TORCH_VERSION_MAJOR == (maj) && TORCH_VERSION_MINOR >= (min)))

namespace instinct::compat {

/// Scaled dot-product attention on (B,H,N,D) tensors, no mask, no dropout. On 2.x this is the
/// public fused kernel (flash / memory-efficient on CUDA); on 1.13 the math implementation.
inline at::Tensor sdpa(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
#if INSTINCT_TORCH_2
  return at::scaled_dot_product_attention(q, k, v);
#else
  return std::get<0>(at::_scaled_dot_product_attention(q, k, v));
#endif
}

/// Turns CUDA autocast on/off with the given lower-precision dtype (thread-local state).
inline void set_cuda_autocast(bool enabled, at::ScalarType dtype = at::kBFloat16) {
#if INSTINCT_TORCH_AT_LEAST(2, 4)
  at::autocast::set_autocast_enabled(at::kCUDA, enabled);
  at::autocast::set_autocast_dtype(at::kCUDA, dtype);
#else
  at::autocast::set_enabled(enabled);
  at::autocast::set_autocast_gpu_dtype(dtype);
#endif
  if (!enabled) at::autocast::clear_cache();
}

/// Whether CUDA autocast is on in this thread.
inline bool cuda_autocast_enabled() {
#if INSTINCT_TORCH_AT_LEAST(2, 4)
  return at::autocast::is_autocast_enabled(at::kCUDA);
#else
  return at::autocast::is_enabled();
#endif
}

/// RAII scope for CUDA autocast (LibTorch has no C++ guard of its own).
class CudaAutocast {
 public:
  explicit CudaAutocast(bool enabled, at::ScalarType dtype = at::kBFloat16) : enabled_(enabled) {
    if (enabled_) set_cuda_autocast(true, dtype);
  }
  ~CudaAutocast() {
    if (enabled_) set_cuda_autocast(false);
  }
  CudaAutocast(const CudaAutocast&) = delete;
  CudaAutocast& operator=(const CudaAutocast&) = delete;

 private:
  bool enabled_;
};

}  // namespace instinct::compat
