#pragma once
// Device and CPU-thread selection shared by every tool (trainers, instinct-eval, instinct-bench), so a
// bad `device` value is the same one-line user error everywhere.
#include <c10/core/Device.h>

#include <string>

namespace instinct {

/// Parses a device setting: "auto" is the first CUDA device when one is available, else the CPU;
/// otherwise "cpu", "cuda" or "cuda:N". Throws instinct::Error naming `key` and the value when it is
/// not a device, or when it names CUDA on a machine / build without it.
c10::Device resolve_device(const std::string& spec, const std::string& key = "device");

/// Sets LibTorch's intra-op CPU threads: `threads` when > 0, else one per hardware thread. Returns the
/// number set.
int set_cpu_threads(int threads);

}  // namespace instinct
