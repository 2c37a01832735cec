#include "instinct/distill/distributed.h"

#if __has_include(<gloo/algorithm.h>)  // Debian: libgloo-dev; pip wheels ship gloo's headers
#define INSTINCT_HAVE_GLOO 1
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef INSTINCT_WITH_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif
#include <torch/torch.h>

#include <spdlog/spdlog.h>

#include <csignal>
#include <cstdlib>
#include <map>

#include "instinct/common/error.h"
#include "instinct/common/signals.h"

namespace instinct::distill {
namespace {

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  INSTINCT_CHECK(end && *end == '\0' && x >= 0 && x < (1 << 20), "environment variable ", name, "='", v,
                 "': expected a non-negative integer");
  return static_cast<int>(x);
}

std::string brief(const std::exception& e) {
  std::string s = dynamic_cast<const c10::Error*>(&e) ? static_cast<const c10::Error&>(e).what_without_backtrace() : e.what();
  return s.substr(0, s.find('\n'));
}

}  // namespace

// The backend behind a type-erased interface (Gloo and NCCL are different classes in 1.13 and
// in 2.x, where they are c10d::Backend subclasses).
struct Distributed::Impl {
  virtual ~Impl() = default;
  virtual void allreduce(std::vector<at::Tensor>& t) = 0;
  virtual void broadcast(std::vector<at::Tensor>& t) = 0;
  virtual void barrier() = 0;
  c10::intrusive_ptr<c10d::Store> store;
  std::chrono::milliseconds timeout{0};
  int rank = 0;
  bool cuda = false;  // collectives run on device tensors (NCCL)

  void run(const char* what, const std::function<void()>& fn) {
    try {
      fn();
    } catch (const std::exception& e) {
      fail("rank ", rank, ": ", what, " failed (another rank exited, or none answered within ",
           timeout.count() / 1000, " s): ", brief(e));
    }
  }
};

namespace {
template <class PG>
struct BackendImpl : Distributed::Impl {
  c10::intrusive_ptr<PG> pg;
  void allreduce(std::vector<at::Tensor>& t) override { pg->allreduce(t)->wait(timeout); }
  void broadcast(std::vector<at::Tensor>& t) override { pg->broadcast(t)->wait(timeout); }
  void barrier() override { pg->barrier()->wait(timeout); }
};
}  // namespace

Distributed Distributed::from_env(const DistributedConfig& cfg, bool cuda) {
  Distributed d;
  d.world_ = std::max(1, env_int("WORLD_SIZE", 1));
  d.rank_ = env_int("RANK", 0);
  d.local_rank_ = env_int("LOCAL_RANK", d.rank_);
  INSTINCT_CHECK(d.rank_ < d.world_, "RANK=", d.rank_, " with WORLD_SIZE=", d.world_, ": expected RANK < WORLD_SIZE");
  INSTINCT_CHECK(cfg.timeout_s > 0, "distributed.timeout_s = ", cfg.timeout_s, ": expected > 0");
  if (d.world_ == 1) return d;
  std::string backend = cfg.backend;
  if (backend == "auto") {
#ifdef INSTINCT_WITH_NCCL
    backend = cuda ? "nccl" : "gloo";
#else
    backend = "gloo";
#endif
  }
  INSTINCT_CHECK(backend == "gloo" || backend == "nccl", "distributed.backend = '", cfg.backend,
                 "': expected auto, gloo or nccl");
#ifndef INSTINCT_WITH_NCCL
  INSTINCT_CHECK(backend != "nccl", "distributed.backend = nccl: this build has no NCCL (configure with "
                 "-DINSTINCT_WITH_NCCL=ON against a CUDA LibTorch), use gloo");
#endif
  const char* addr = std::getenv("MASTER_ADDR");
  const int port = env_int("MASTER_PORT", 29500);
  INSTINCT_CHECK(addr && *addr, "WORLD_SIZE=", d.world_, " but MASTER_ADDR is not set; launch with torchrun or set "
                 "MASTER_ADDR and MASTER_PORT");
  INSTINCT_CHECK(port > 0 && port < 65536, "MASTER_PORT=", port, ": expected a TCP port");
  const auto timeout = std::chrono::milliseconds(int64_t(cfg.timeout_s) * 1000);
  c10d::TCPStoreOptions so;
  so.port = static_cast<uint16_t>(port);
  so.isServer = d.rank_ == 0;
  so.numWorkers = static_cast<size_t>(d.world_);
  so.waitWorkers = true;
  so.timeout = timeout;
  c10::intrusive_ptr<c10d::Store> store;
  try {
    store = c10::make_intrusive<c10d::TCPStore>(std::string(addr), so);
  } catch (const std::exception& e) {
    fail("rank ", d.rank_, ": rendezvous at ", addr, ":", port, " with ", d.world_, " ranks failed within ",
         cfg.timeout_s, " s: ", brief(e));
  }
  try {
    if (backend == "gloo") {
#ifdef INSTINCT_HAVE_GLOO
      auto impl = std::make_shared<BackendImpl<c10d::ProcessGroupGloo>>();
      auto opts = c10d::ProcessGroupGloo::Options::create(timeout);
      opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
      impl->pg = c10::make_intrusive<c10d::ProcessGroupGloo>(store, d.rank_, d.world_, opts);
      d.impl_ = impl;
#else
      fail("distributed.backend = gloo: this build found no gloo headers (install libgloo-dev and reconfigure)");
#endif
    }
#ifdef INSTINCT_WITH_NCCL
    else {
      auto impl = std::make_shared<BackendImpl<c10d::ProcessGroupNCCL>>();
      auto opts = c10d::ProcessGroupNCCL::Options::create();
      opts->timeout = timeout;
      impl->pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, d.rank_, d.world_, opts);
      impl->cuda = true;
      d.impl_ = impl;
    }
#endif
  } catch (const std::exception& e) {
    fail("rank ", d.rank_, ": creating the ", backend, " process group failed: ", brief(e));
  }
  d.impl_->store = store;
  d.impl_->timeout = timeout;
  d.impl_->rank = d.rank_;
  d.backend_ = backend;
  return d;
}

void Distributed::broadcast(const std::vector<at::Tensor>& tensors) const {
  if (!enabled()) return;
  torch::NoGradGuard ng;
  for (const auto& t : tensors) {
    std::vector<at::Tensor> v{impl_->cuda ? t.detach() : t.detach().to(at::kCPU).contiguous()};
    impl_->run("broadcast of the initial weights", [&] { impl_->broadcast(v); });
    if (!v[0].is_same(t)) t.detach().copy_(v[0]);
  }
}

void Distributed::average_gradients(const std::vector<at::Tensor>& params, int64_t bucket_mb) const {
  if (!enabled()) return;
  torch::NoGradGuard ng;
  // Buckets of same-dtype gradients, flattened, summed, divided, copied back.
  std::map<at::ScalarType, std::vector<at::Tensor>> by_dtype;
  for (const auto& p : params) {
    if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
    by_dtype[p.grad().scalar_type()].push_back(p.grad());
  }
  const int64_t cap = std::max<int64_t>(1, bucket_mb) << 20;
  for (auto& [dtype, grads] : by_dtype) {
    size_t i = 0;
    while (i < grads.size()) {
      std::vector<at::Tensor> bucket;
      int64_t bytes = 0;
      while (i < grads.size() && (bucket.empty() || bytes + grads[i].numel() * int64_t(grads[i].element_size()) <= cap)) {
        bytes += grads[i].numel() * int64_t(grads[i].element_size());
        bucket.push_back(grads[i++]);
      }
      std::vector<at::Tensor> flat_parts;
      for (const auto& g : bucket) flat_parts.push_back(g.reshape({-1}));
      at::Tensor flat = torch::cat(flat_parts);
      if (!impl_->cuda) flat = flat.to(at::kCPU);
      std::vector<at::Tensor> v{flat};
      impl_->run("gradient all-reduce", [&] { impl_->allreduce(v); });
      flat = v[0].div_(world_);
      int64_t off = 0;
      for (auto& g : bucket) {
        g.copy_(flat.narrow(0, off, g.numel()).view_as(g));
        off += g.numel();
      }
    }
  }
}

double Distributed::sum(double v) const {
  if (!enabled()) return v;
  std::vector<at::Tensor> t{torch::tensor({v}, torch::kFloat64)};
  if (impl_->cuda) t[0] = t[0].to(at::Device(at::kCUDA, local_rank_));
  impl_->run("all-reduce of a scalar", [&] { impl_->allreduce(t); });
  return t[0].item<double>();
}

Distributed join_data_parallel(const DistributedConfig& cfg, std::string& device) {
  const bool cuda = device != "cpu" && torch::cuda::is_available();
  Distributed dist = Distributed::from_env(cfg, cuda);
  if (!dist.enabled()) return dist;
  if ((device == "auto" || device == "cuda") && cuda) device = "cuda:" + std::to_string(dist.local_rank());
  if (!dist.is_main()) spdlog::set_level(spdlog::level::warn);
  spdlog::info("data parallel: {} ranks ({})", dist.world_size(), dist.backend());
  return dist;
}

void agree_on_stop(const Distributed& dist) {
  if (!dist.enabled()) return;
  const int sig = stop_signal();
  if (dist.sum(sig ? 1.0 : 0.0) > 0 && !sig) raise_stop_signal(SIGTERM);
}

void Distributed::barrier() const {
  if (!enabled()) return;
  impl_->run("barrier", [&] { impl_->barrier(); });
}

}  // namespace instinct::distill
