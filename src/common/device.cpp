#include "instinct/common/device.h"

#include <ATen/Parallel.h>
#include <torch/cuda.h>

#include <algorithm>
#include <thread>

#include "instinct/common/error.h"

namespace instinct {

c10::Device resolve_device(const std::string& spec, const std::string& key) {
  if (spec == "auto") return torch::cuda::is_available() ? c10::Device(c10::kCUDA) : c10::Device(c10::kCPU);
  c10::Device d(c10::kCPU);
  try {
    d = c10::Device(spec);
  } catch (const std::exception&) {
    fail(key, " '", spec, "' is not valid; expected auto, cpu, cuda or cuda:N");
  }
  INSTINCT_CHECK(!d.is_cuda() || torch::cuda::is_available(), key, " '", spec,
                 "' requested but CUDA is not available in this build/machine");
  return d;
}

int set_cpu_threads(int threads) {
  const int n = threads > 0 ? threads : int(std::max(1u, std::thread::hardware_concurrency()));
  at::set_num_threads(n);
  return n;
}

}  // namespace instinct
