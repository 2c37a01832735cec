#include "instinct/distill/distributed.h"

#if __has_include(<gloo/algorithm.h>)  // Debian: libgloo-dev; pip wheels ship gloo's headers
#define INSTINCT_HAVE_GLOO 1
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef INSTINCT_WITH_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif
#include <c10/core/Event.h>
#include <c10/core/impl/VirtualGuardImpl.h>
#include <torch/torch.h>

#include <spdlog/spdlog.h>

#include <csignal>
#include <cstdlib>
#include <deque>
#include <map>
#include <mutex>
#include <thread>

#include "instinct/common/error.h"
#include "common/signals.h"

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

}  // namespace

// The backend behind a type-erased interface (Gloo and NCCL are different classes in 1.13 and
// in 2.x, where they are c10d::Backend subclasses).
struct Distributed::Impl {
  virtual ~Impl() = default;
  /// Starts an all-reduce (sum, or max) and returns what waits for it. Under NCCL the wait only
  /// makes the current CUDA stream wait (the watchdog enforces the timeout); under Gloo it blocks.
  virtual std::function<void()> allreduce_async(std::vector<at::Tensor>& t, bool max) = 0;
  virtual void broadcast(std::vector<at::Tensor>& t) = 0;
  virtual void barrier() = 0;
  void allreduce(std::vector<at::Tensor>& t) { allreduce_async(t, false)(); }
  c10::intrusive_ptr<c10d::Store> store;
  std::chrono::milliseconds timeout{0};
  int rank = 0;
  int local_rank = 0;
  bool cuda = false;  // collectives run on device tensors (NCCL)
  // Stop agreement rounds still in flight (oldest first).
  struct Flag {
    at::Tensor value, host;
    std::function<void()> wait;
    std::shared_ptr<c10::Event> ready;
  };
  std::deque<Flag> flags;

  void run(const char* what, const std::function<void()>& fn) {
    try {
      fn();
    } catch (const std::exception& e) {
      fail("rank ", rank, ": ", what, " failed (another rank exited, or none answered within ",
           timeout.count() / 1000, " s): ", error_text(e));
    }
  }
};

namespace {
template <class PG>
struct BackendImpl : Distributed::Impl {
  c10::intrusive_ptr<PG> pg;
  // An explicit timeout makes NCCL's wait block the host; NCCL's own watchdog enforces it instead.
  template <class W>
  void wait(const W& w) {
    if (cuda) w->wait();
    else w->wait(timeout);
  }
  std::function<void()> allreduce_async(std::vector<at::Tensor>& t, bool max) override {
    c10d::AllreduceOptions o;
    if (max) o.reduceOp = c10d::ReduceOp::MAX;
    auto w = pg->allreduce(t, o);
    return [this, w] { wait(w); };
  }
  void broadcast(std::vector<at::Tensor>& t) override { wait(pg->broadcast(t)); }
  void barrier() override { wait(pg->barrier()); }
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
  const char* addr = std::getenv("MASTER_ADDR");
  const int port = env_int("MASTER_PORT", 29500);
  INSTINCT_CHECK(addr && *addr, "WORLD_SIZE=", d.world_, " but MASTER_ADDR is not set; launch with torchrun or set "
                 "MASTER_ADDR and MASTER_PORT");
  return connect(cfg, d.rank_, d.world_, d.local_rank_, addr, port, cuda);
}

Distributed Distributed::connect(const DistributedConfig& cfg, int rank, int world, int local_rank,
                                 const std::string& addr, int port, bool cuda) {
  Distributed d;
  d.rank_ = rank;
  d.world_ = world;
  d.local_rank_ = local_rank;
  INSTINCT_CHECK(cfg.timeout_s > 0, "distributed.timeout_s = ", cfg.timeout_s, ": expected > 0");
  INSTINCT_CHECK(cfg.bucket_mb > 0, "distributed.bucket_mb = ", cfg.bucket_mb, ": expected > 0");
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
    store = c10::make_intrusive<c10d::TCPStore>(addr, so);
  } catch (const std::exception& e) {
    fail("rank ", d.rank_, ": rendezvous at ", addr, ":", port, " with ", d.world_, " ranks failed within ",
         cfg.timeout_s, " s: ", error_text(e));
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
    fail("rank ", d.rank_, ": creating the ", backend, " process group failed: ", error_text(e));
  }
  d.impl_->store = store;
  d.impl_->timeout = timeout;
  d.impl_->rank = d.rank_;
  d.impl_->local_rank = d.local_rank_;
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

void Distributed::average_gradients(const std::vector<at::Tensor>& params, double bucket_mb) const {
  if (!enabled()) return;
  torch::NoGradGuard ng;
  // Buckets of same-dtype gradients, flattened, summed, divided, copied back.
  std::map<at::ScalarType, std::vector<at::Tensor>> by_dtype;
  for (const auto& p : params) {
    if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
    by_dtype[p.grad().scalar_type()].push_back(p.grad());
  }
  const int64_t cap = std::max<int64_t>(1, int64_t(bucket_mb * double(1 << 20)));
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

Distributed join_data_parallel(const DistributedConfig& cfg, std::string& device) {
  const bool cuda = device != "cpu" && torch::cuda::is_available();
  Distributed dist = Distributed::from_env(cfg, cuda);
  if (!dist.enabled()) return dist;
  if ((device == "auto" || device == "cuda") && cuda) device = "cuda:" + std::to_string(dist.local_rank());
  if (!dist.is_main()) spdlog::set_level(spdlog::level::warn);
  spdlog::info("data parallel: {} ranks ({})", dist.world_size(), dist.backend());
  return dist;
}

int Distributed::agree_on_signal(int local_signal) const {
  if (!enabled()) return local_signal;
  Impl& I = *impl_;
  const size_t lag = I.cuda ? 2 : 0;
  Impl::Flag f;
  if (I.cuda) {
    const at::Device dev(at::kCUDA, static_cast<c10::DeviceIndex>(local_rank_));
    f.value = torch::full({1}, local_signal, at::TensorOptions().dtype(at::kInt).device(dev));
    f.host = at::empty({1}, at::TensorOptions().dtype(at::kInt).pinned_memory(true));
    std::vector<at::Tensor> v{f.value};
    I.run("stop agreement", [&] { I.allreduce_async(v, /*max=*/true)(); });  // orders the stream only
    f.host.copy_(f.value, /*non_blocking=*/true);
    f.ready = std::make_shared<c10::Event>(c10::DeviceType::CUDA);
    f.ready->record(c10::impl::VirtualGuardImpl(c10::DeviceType::CUDA).getStream(dev));
  } else {
    f.value = torch::full({1}, local_signal, torch::kInt);
    std::vector<at::Tensor> v{f.value};
    I.run("stop agreement", [&] { f.wait = I.allreduce_async(v, /*max=*/true); });
  }
  I.flags.push_back(std::move(f));
  if (I.flags.size() <= lag) return 0;
  Impl::Flag done = std::move(I.flags.front());
  I.flags.pop_front();
  if (!done.ready) {
    I.run("stop agreement", [&] { done.wait(); });
    return done.value.item<int>();
  }
  // `lag` steps old: the stream is normally long past it, so this rarely waits at all.
  const auto deadline = std::chrono::steady_clock::now() + I.timeout;
  while (!done.ready->query()) {
    if (std::chrono::steady_clock::now() > deadline)
      fail("rank ", rank_, ": stop agreement failed (another rank exited, or none answered within ", I.timeout.count() / 1000, " s)");
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
  return done.host.item<int>();
}

int agree_on_stop(const Distributed& dist) { return dist.agree_on_signal(stop_signal()); }

// ---------------------------------------------------------------------------------------------
// GradientReducer

struct GradientReducer::State {
  struct Bucket {
    std::vector<size_t> members;
    at::Tensor flat;
    int64_t pending = 0;
    bool started = false;
    std::function<void()> wait;
  };
  std::shared_ptr<Distributed::Impl> impl;
  std::vector<at::Tensor> params;
  std::vector<Bucket> buckets;
  std::vector<size_t> bucket_of;
  std::vector<int64_t> offset;
  std::vector<char> arrived;
  size_t next = 0;       // first bucket not started yet
  bool active = false;   // the current backward ends a step
  std::mutex mu;

  at::Tensor slot(size_t i) {
    return buckets[bucket_of[i]].flat.narrow(0, offset[i], params[i].numel()).view(params[i].sizes());
  }
  void reset() {
    std::fill(arrived.begin(), arrived.end(), 0);
    for (auto& b : buckets) {
      b.pending = int64_t(b.members.size());
      b.started = false;
    }
    next = 0;
  }
  // Buckets start strictly in order so that every rank issues the same sequence of collectives.
  void start_ready() {
    while (next < buckets.size() && buckets[next].pending == 0) {
      auto& b = buckets[next++];
      std::vector<at::Tensor> v{b.flat};
      impl->run("gradient all-reduce", [&] { b.wait = impl->allreduce_async(v, false); });
      b.started = true;
    }
  }
  void on_grad(size_t i, const at::Tensor& g) {
    std::lock_guard<std::mutex> lock(mu);
    if (!active) return;
    torch::NoGradGuard ng;
    auto& b = buckets[bucket_of[i]];
    auto s = slot(i);
    if (arrived[i]) {
      INSTINCT_CHECK(!b.started, "a second gradient for parameter #", i, " arrived after its bucket's all-reduce "
                     "started; set distributed.overlap=false");
      s.add_(g.to(s.device()));
      return;
    }
    s.copy_(g);
    if (params[i].grad().defined()) s.add_(params[i].grad().to(s.device()));  // earlier micro-batches
    arrived[i] = 1;
    if (--b.pending == 0) start_ready();
  }
};

GradientReducer::GradientReducer(const Distributed& dist, std::vector<at::Tensor> params, const DistributedConfig& cfg)
    : dist_(dist), cfg_(cfg) {
  for (auto& p : params)
    if (p.requires_grad()) params_.push_back(p);
  if (!dist_.enabled() || !cfg_.overlap) return;
  state_ = std::make_shared<State>();
  auto& S = *state_;
  S.impl = dist_.impl_;
  S.params = params_;
  S.bucket_of.resize(params_.size());
  S.offset.resize(params_.size());
  S.arrived.assign(params_.size(), 0);
  // Reverse order: backward produces the last layers' gradients first.
  const int64_t cap = std::max<int64_t>(1, int64_t(cfg_.bucket_mb * double(1 << 20)));
  int64_t bytes = 0, numel = 0;
  for (size_t k = params_.size(); k-- > 0;) {
    const auto& p = params_[k];
    const int64_t nb = p.numel() * int64_t(p.element_size());
    bool fresh = S.buckets.empty() || bytes + nb > cap;
    if (!fresh) {
      const auto& first = params_[S.buckets.back().members.front()];
      fresh = first.scalar_type() != p.scalar_type() || first.device() != p.device();
    }
    if (fresh) {
      if (!S.buckets.empty())
        S.buckets.back().flat = torch::zeros({numel}, params_[S.buckets.back().members.front()].options()
                                                          .device(S.impl->cuda ? p.device() : at::Device(at::kCPU)));
      S.buckets.emplace_back();
      bytes = numel = 0;
    }
    S.bucket_of[k] = S.buckets.size() - 1;
    S.offset[k] = numel;
    S.buckets.back().members.push_back(k);
    bytes += nb;
    numel += p.numel();
  }
  if (!S.buckets.empty()) {
    const auto& p = params_[S.buckets.back().members.front()];
    S.buckets.back().flat = torch::zeros({numel}, p.options().device(S.impl->cuda ? p.device() : at::Device(at::kCPU)));
  }
  S.reset();
  for (size_t i = 0; i < params_.size(); ++i) {
    std::shared_ptr<State> st = state_;
    hooks_.push_back(params_[i].register_hook([st, i](const at::Tensor& g) { st->on_grad(i, g); }));
  }
}

GradientReducer::~GradientReducer() {
  for (size_t i = 0; i < hooks_.size(); ++i) params_[i].remove_hook(hooks_[i]);
}

int64_t GradientReducer::buckets() const { return state_ ? int64_t(state_->buckets.size()) : 0; }

void GradientReducer::prepare(bool last_micro_batch) {
  if (!state_) return;
  std::lock_guard<std::mutex> lock(state_->mu);
  state_->active = last_micro_batch;
  if (last_micro_batch) state_->reset();
}

void GradientReducer::finish() {
  if (!dist_.enabled()) return;
  if (!state_) {
    dist_.average_gradients(params_, cfg_.bucket_mb);
    return;
  }
  auto& S = *state_;
  torch::NoGradGuard ng;
  {
    std::lock_guard<std::mutex> lock(S.mu);
    INSTINCT_ASSERT(S.active);
    started_early_ = int64_t(S.next);
    for (size_t i = 0; i < S.params.size(); ++i) {
      if (S.arrived[i]) continue;
      auto s = S.slot(i);  // no gradient this step: what earlier micro-batches left, or zeros
      if (S.params[i].grad().defined()) s.copy_(S.params[i].grad());
      else s.zero_();
      S.arrived[i] = 1;
      --S.buckets[S.bucket_of[i]].pending;
    }
    S.start_ready();
    INSTINCT_ASSERT(S.next == S.buckets.size());
    S.active = false;
  }
  for (auto& b : S.buckets) {
    S.impl->run("gradient all-reduce", [&] { b.wait(); });
    b.flat.div_(dist_.world_size());
    for (size_t i : b.members) {
      auto& p = S.params[i];
      auto s = S.slot(i);
      if (p.grad().defined()) p.mutable_grad().copy_(s);
      else p.mutable_grad() = s.to(p.device(), /*non_blocking=*/false, /*copy=*/true);
    }
  }
}

void Distributed::barrier() const {
  if (!enabled()) return;
  impl_->run("barrier", [&] { impl_->barrier(); });
}

}  // namespace instinct::distill
