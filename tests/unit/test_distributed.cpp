// Data parallelism with two ranks as two threads of this process, each with its own Gloo process
// group over a TCPStore (the CLI test, tests/cli/distributed_gloo.sh, uses real processes).
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <torch/torch.h>
#include <unistd.h>

#include <csignal>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "instinct/common/error.h"
#include "instinct/distill/distributed.h"
#include "instinct/model/vit.h"

using namespace instinct;

namespace {

int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  EXPECT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len), 0);
  ::close(fd);
  return ntohs(a.sin_port);
}

// Runs fn(dist, rank) on `world` threads joined into one Gloo group; returns each rank's error.
std::vector<std::string> run_ranks(int world, const distill::DistributedConfig& cfg,
                                   const std::function<void(const distill::Distributed&, int)>& fn) {
  const int port = free_port();
  std::vector<std::string> errors(static_cast<size_t>(world));
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r)
    threads.emplace_back([&, r] {
      try {
        auto d = distill::Distributed::connect(cfg, r, world, r, "127.0.0.1", port, false);
        fn(d, r);
      } catch (const std::exception& e) {
        errors[size_t(r)] = e.what();
      }
    });
  for (auto& t : threads) t.join();
  return errors;
}

bool have_gloo() {
  distill::DistributedConfig cfg;
  cfg.backend = "gloo";
  cfg.timeout_s = 10;
  auto errors = run_ranks(2, cfg, [](const distill::Distributed&, int) {});
  return errors[0].find("no gloo headers") == std::string::npos;
}

model::VitConfig tiny(bool checkpointing) {
  model::VitConfig c;
  c.preset = "custom"; c.img_size = 32; c.patch = 8; c.width = 16; c.depth = 3; c.heads = 2;
  c.out_channels = 8; c.out_grid = 4; c.grad_checkpointing = checkpointing;
  return c;
}

void copy_weights(model::StudentTrunk& dst, model::StudentTrunk& src) {
  torch::NoGradGuard ng;
  auto a = model::state_dict(*dst), b = model::state_dict(*src);
  for (size_t i = 0; i < a.size(); ++i) a[i].second.copy_(b[i].second);
}

// The loss of one micro-batch; `extra` (a parameter outside the trunk) is used by rank 1 only.
at::Tensor micro_loss(model::StudentTrunk& m, const at::Tensor& extra, const at::Tensor& x, int rank) {
  auto y = m->forward(x);
  auto loss = (y * y).mean();
  if (rank == 1) loss = loss + (extra * extra).sum();
  return loss;
}

struct Ranks {
  std::vector<model::StudentTrunk> models;
  std::vector<at::Tensor> extra;
  std::vector<std::vector<at::Tensor>> inputs;  // [rank][step * 2 + micro]
};

// Both ranks start from the same weights; each has its own data (2 steps x 2 micro-batches).
Ranks make_setup(bool checkpointing, const at::Device& device = at::kCPU) {
  torch::manual_seed(7);
  Ranks s;
  for (int r = 0; r < 2; ++r) {
    s.models.emplace_back(tiny(checkpointing));
    if (r > 0) copy_weights(s.models[1], s.models[0]);
    s.models[size_t(r)]->to(device);
    s.models[size_t(r)]->train();
    s.extra.push_back(torch::full({3}, 0.5, at::TensorOptions().device(device)).requires_grad_(true));
    s.inputs.emplace_back();
    for (int k = 0; k < 4; ++k) s.inputs.back().push_back(torch::randn({2, 3, 32, 32}).to(device));
  }
  return s;
}

// Parameters in the order the trainers register them; `extra` first, so the bucket holding it is
// the last one and the others can start during backward.
std::vector<at::Tensor> params_of(Ranks& s, int r) {
  std::vector<at::Tensor> p{s.extra[size_t(r)]};
  for (auto& t : s.models[size_t(r)]->parameters()) p.push_back(t);
  return p;
}

}  // namespace

// After each step, every rank holds the mean over ranks of its accumulated gradients, exactly what
// the two ranks' separate backward passes give (one process per rank, averaged by hand) -- with
// overlap on (several buckets, started during backward, a parameter one rank never uses,
// checkpointed blocks whose gradients arrive from a nested backward) and off.
TEST(Distributed, ReducerAveragesAccumulatedGradientsDuringBackward) {
  if (!have_gloo()) GTEST_SKIP() << "this build has no Gloo";
  for (bool overlap : {true, false}) {
    Ranks ref = make_setup(true), got = make_setup(true);
    // Reference: each rank's accumulated gradients computed alone, then averaged.
    std::vector<std::vector<at::Tensor>> expected(2);  // [step][param], mean over ranks
    for (int step = 0; step < 2; ++step) {
      std::vector<std::vector<at::Tensor>> per_rank;
      for (int r = 0; r < 2; ++r) {
        auto ps = params_of(ref, r);
        for (auto& p : ps) p.mutable_grad() = at::Tensor();
        for (int micro = 0; micro < 2; ++micro)
          (micro_loss(ref.models[size_t(r)], ref.extra[size_t(r)], ref.inputs[size_t(r)][size_t(step * 2 + micro)], r) / 2).backward();
        std::vector<at::Tensor> g;
        for (auto& p : ps) g.push_back(p.grad().defined() ? p.grad().clone() : torch::zeros_like(p));
        per_rank.push_back(g);
      }
      for (size_t i = 0; i < per_rank[0].size(); ++i) expected[size_t(step)].push_back((per_rank[0][i] + per_rank[1][i]) / 2);
    }

    distill::DistributedConfig cfg;
    cfg.backend = "gloo";
    cfg.timeout_s = 20;
    cfg.overlap = overlap;
    cfg.bucket_mb = 4096.0 / (1 << 20);  // 4 KiB: several buckets for this tiny trunk
    std::vector<std::vector<std::vector<at::Tensor>>> reduced(2);  // [rank][step]
    std::vector<int64_t> buckets(2), early(2);
    auto errors = run_ranks(2, cfg, [&](const distill::Distributed& d, int r) {
      auto ps = params_of(got, r);
      distill::GradientReducer reducer(d, ps, cfg);
      for (int step = 0; step < 2; ++step) {
        for (auto& p : ps) p.mutable_grad() = at::Tensor();
        for (int micro = 0; micro < 2; ++micro) {
          reducer.prepare(micro == 1);
          (micro_loss(got.models[size_t(r)], got.extra[size_t(r)], got.inputs[size_t(r)][size_t(step * 2 + micro)], r) / 2).backward();
        }
        reducer.finish();
        std::vector<at::Tensor> g;
        for (auto& p : ps) g.push_back(p.grad().clone());
        reduced[size_t(r)].push_back(g);
      }
      buckets[size_t(r)] = reducer.buckets();
      early[size_t(r)] = reducer.started_during_backward();
    });
    ASSERT_EQ(errors[0], "");
    ASSERT_EQ(errors[1], "");
    for (int r = 0; r < 2; ++r)
      for (int step = 0; step < 2; ++step) {
        const auto& e = expected[size_t(step)];
        const auto& g = reduced[size_t(r)][size_t(step)];
        ASSERT_EQ(e.size(), g.size());
        for (size_t i = 0; i < e.size(); ++i)
          EXPECT_TRUE(torch::allclose(g[i], e[i], 1e-5, 1e-7))
              << "overlap " << overlap << " rank " << r << " step " << step << " param " << i << ": max diff "
              << (g[i] - e[i]).abs().max().item<double>();
      }
    if (overlap) {
      EXPECT_GE(buckets[0], 4);
      EXPECT_EQ(buckets[0], buckets[1]);
      // Rank 0 never uses `extra`: all but its (last) bucket start before finish(); on rank 1 all do.
      EXPECT_EQ(early[0], buckets[0] - 1);
      EXPECT_EQ(early[1], buckets[1]);
    } else {
      EXPECT_EQ(buckets[0], 0);
    }
  }
}

// A signal on one rank stops every rank at the same round (Gloo: lag 0).
TEST(Distributed, StopAgreementReachesEveryRankInTheSameRound) {
  if (!have_gloo()) GTEST_SKIP() << "this build has no Gloo";
  distill::DistributedConfig cfg;
  cfg.backend = "gloo";
  cfg.timeout_s = 20;
  std::vector<std::vector<int>> seen(2);
  auto errors = run_ranks(2, cfg, [&](const distill::Distributed& d, int r) {
    for (int round = 0; round < 5; ++round) seen[size_t(r)].push_back(d.agree_on_signal(r == 1 && round >= 2 ? SIGTERM : 0));
  });
  ASSERT_EQ(errors[0], "");
  ASSERT_EQ(errors[1], "");
  const std::vector<int> want{0, 0, SIGTERM, SIGTERM, SIGTERM};
  EXPECT_EQ(seen[0], want);
  EXPECT_EQ(seen[1], want);
}

// NCCL builds on a GPU machine: a one-rank NCCL group runs the device paths (buckets on the GPU,
// non-blocking waits, the stop agreement read back through pinned memory with its 2-round lag).
TEST(Distributed, CudaNcclSingleRankReducerAndStopAgreement) {
#ifndef INSTINCT_WITH_NCCL
  GTEST_SKIP() << "built without NCCL (INSTINCT_WITH_NCCL=OFF)";
#else
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  distill::DistributedConfig cfg;
  cfg.backend = "nccl";
  cfg.timeout_s = 60;
  cfg.bucket_mb = 4096.0 / (1 << 20);
  auto d = distill::Distributed::connect(cfg, 0, 1, 0, "127.0.0.1", free_port(), true);
  ASSERT_TRUE(d.enabled());
  EXPECT_EQ(d.backend(), "nccl");
  const at::Device dev(at::kCUDA, 0);
  Ranks s = make_setup(true, dev);
  // Model 1 (rank 1's data) as the plain reference, model 0 through the reducer with the same data.
  auto ps = params_of(s, 0), ref = params_of(s, 1);
  distill::GradientReducer reducer(d, ps, cfg);
  EXPECT_GE(reducer.buckets(), 4);
  for (int step = 0; step < 2; ++step) {
    for (auto& p : ps) p.mutable_grad() = at::Tensor();
    for (auto& p : ref) p.mutable_grad() = at::Tensor();
    for (int micro = 0; micro < 2; ++micro) {
      reducer.prepare(micro == 1);
      (micro_loss(s.models[0], s.extra[0], s.inputs[1][size_t(step * 2 + micro)], 1) / 2).backward();
      (micro_loss(s.models[1], s.extra[1], s.inputs[1][size_t(step * 2 + micro)], 1) / 2).backward();
    }
    reducer.finish();
    EXPECT_EQ(reducer.started_during_backward(), reducer.buckets());
    for (size_t i = 0; i < ps.size(); ++i)
      EXPECT_TRUE(torch::allclose(ps[i].grad(), ref[i].grad(), 1e-5, 1e-7)) << "step " << step << " param " << i;
  }
  std::vector<int> seen;
  for (int round = 0; round < 5; ++round) seen.push_back(d.agree_on_signal(round == 1 ? SIGTERM : 0));
  EXPECT_EQ(seen, (std::vector<int>{0, 0, 0, SIGTERM, 0}));
#endif
}

TEST(Distributed, BadSettingsNameTheField) {
  distill::DistributedConfig cfg;
  cfg.bucket_mb = 0;
  try {
    distill::Distributed::connect(cfg, 0, 2, 0, "127.0.0.1", 1, false);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("distributed.bucket_mb = 0"), std::string::npos) << e.what();
  }
  cfg.bucket_mb = 25;
  cfg.backend = "mpi";
  EXPECT_THROW(distill::Distributed::connect(cfg, 0, 2, 0, "127.0.0.1", 1, false), Error);
}
