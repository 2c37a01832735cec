// instinct-bench: throughput micro-benchmarks.
//   instinct-bench loader --images DIR --size 1008 --workers 2 --batch 8 --batches 25
// prints images/s (from loader construction to the last batch, and excluding the first batch) and
// the peak RSS of the process. scripts/bench_loader.py compares it with a torchvision DataLoader.
//   instinct-bench optim --device cuda --preset vit_base --steps 20
// times the trainer's optimizer step (clip_grad_norm + AdamW + EMA) on a student's parameters with
// each kernel (loop, foreach, fused where available), device-synchronised, in ms per step.
#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <memory>

#include "instinct/common/device.h"
#include "instinct/common/error.h"
#include "instinct/common/tool.h"
#include "instinct/data/dataset.h"
#include "instinct/data/loader.h"
#include "instinct/distill/optim.h"
#include "instinct/model/vit.h"

#include <torch/torch.h>

namespace {

double peak_rss_mib() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss / 1024.0;  // KiB on Linux
}

struct LoaderArgs {
  std::string images;
  std::string resize = "squash";
  int size = 1008, workers = 2, batch = 8, batches = 25, prefetch = 2;
  bool round_uint8 = true;
};

int bench_loader(const LoaderArgs& a) {
  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  auto ds = std::make_shared<instinct::data::ImageFolderDataset>(a.images);
  instinct::data::PreprocessConfig pc;
  pc.image_size = a.size;
  pc.resize = a.resize;
  pc.round_uint8 = a.round_uint8;
  instinct::data::LoaderConfig lc;
  lc.batch_size = a.batch;
  lc.num_workers = a.workers;
  lc.prefetch_batches = a.prefetch;
  lc.drop_last = false;
  lc.max_bad_fraction = 1.0;
  instinct::data::Loader loader(ds, pc, lc);
  int64_t images = 0, first_images = 0, epoch = 0;
  clock::time_point t_first;
  loader.start_epoch(epoch);
  for (int b = 0; b < a.batches;) {
    auto batch = loader.next();
    if (!batch) {
      loader.start_epoch(++epoch);
      continue;
    }
    images += batch->images.size(0);
    if (b++ == 0) {
      t_first = clock::now();
      first_images = images;
    }
  }
  const auto t1 = clock::now();
  const double total_s = std::chrono::duration<double>(t1 - t0).count();
  const double steady_s = std::chrono::duration<double>(t1 - t_first).count();
  std::printf("loader: %zu images in %s, size %d (%s), %d workers, batch %d, %d batches\n", ds->size(),
              a.images.c_str(), a.size, a.resize.c_str(), a.workers, a.batch, a.batches);
  std::printf("images: %lld\n", static_cast<long long>(images));
  std::printf("seconds: %.3f\n", total_s);
  std::printf("images/s: %.2f\n", images / total_s);
  if (a.batches > 1)
    std::printf("images/s (after first batch): %.2f\n", (images - first_images) / steady_s);
  std::printf("skipped: %lld\n", static_cast<long long>(loader.num_skipped()));
  std::printf("peak RSS MiB: %.1f\n", peak_rss_mib());
  return 0;
}

struct OptimArgs {
  std::string device = "cpu", preset = "vit_base";
  int steps = 20, warmup = 3;
};

int bench_optim(const OptimArgs& a) {
  using clock = std::chrono::steady_clock;
  const at::Device dev = instinct::resolve_device(a.device, "--device");
  auto sync = [&] {
    if (dev.is_cuda()) torch::cuda::synchronize();
  };
  instinct::model::VitConfig vc;
  vc.preset = a.preset;
  vc.out_channels = 1024;
  vc.out_grid = 72;
  std::printf("optimizer step (clip + AdamW + EMA), %s student, device %s, %d timed steps\n", a.preset.c_str(),
              a.device.c_str(), a.steps);
  for (const char* name : {"loop", "foreach", "fused"}) {
    if (std::string(name) == "fused" && !instinct::distill::fused_adamw_available()) {
      std::printf("%-8s n/a (this LibTorch has no _fused_adamw_)\n", name);
      continue;
    }
    torch::manual_seed(0);
    instinct::model::StudentTrunk student(vc), shadow(vc);
    student->to(dev);
    shadow->to(dev);
    std::vector<std::pair<std::string, at::Tensor>> params;
    int64_t n = 0;
    for (auto& kv : student->named_parameters()) {
      params.emplace_back(kv.key(), kv.value());
      kv.value().mutable_grad() = torch::randn_like(kv.value()) * 1e-3;
      n += kv.value().numel();
    }
    instinct::distill::OptimConfig oc;
    oc.kernel = name;
    instinct::distill::AdamW opt(params, oc);
    instinct::distill::EmaConfig ec;
    ec.enabled = true;
    instinct::distill::Ema ema(*student, *shadow, ec, opt.kernel());
    auto step = [&] {
      instinct::distill::clip_grad_norm(params, 5.0, opt.kernel());
      opt.step(1e-4);
      ema.update();
    };
    for (int i = 0; i < a.warmup; ++i) step();
    sync();
    const auto t0 = clock::now();
    for (int i = 0; i < a.steps; ++i) step();
    sync();
    const double ms = 1e3 * std::chrono::duration<double>(clock::now() - t0).count() / a.steps;
    std::printf("%-8s %8.2f ms/step  (%.1fM parameters)\n", name, ms, n / 1e6);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"instinct-bench: throughput benchmarks"};
  app.require_subcommand(1);
  LoaderArgs la;
  auto* loader = app.add_subcommand("loader", "image loader throughput (decode + resize + normalise)");
  loader->add_option("--images", la.images, "folder of images (recursive)")->required();
  loader->add_option("--size", la.size, "output side S")->capture_default_str();
  loader->add_option("--resize", la.resize, "squash | longest_pad")->capture_default_str();
  loader->add_option("--workers", la.workers, "decode threads")->capture_default_str();
  loader->add_option("--batch", la.batch, "batch size")->capture_default_str();
  loader->add_option("--batches", la.batches, "batches to time (epochs repeat as needed)")->capture_default_str();
  loader->add_option("--prefetch", la.prefetch, "batches in flight")->capture_default_str();
  loader->add_option("--round-uint8", la.round_uint8, "round resized pixels to uint8")->capture_default_str();
  OptimArgs oa;
  auto* optim = app.add_subcommand("optim", "optimizer step time (clip + AdamW + EMA) per kernel");
  optim->add_option("--device", oa.device, "cpu | cuda | cuda:N")->capture_default_str();
  optim->add_option("--preset", oa.preset, "student preset (vit_base, vit_base_1152, vit_small, vit_tiny)")->capture_default_str();
  optim->add_option("--steps", oa.steps, "timed steps per kernel")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  return instinct::tool::run_guarded([&] {
    if (*loader) return bench_loader(la);
    if (*optim) return bench_optim(oa);
    return 0;
  }, "instinct-bench");
}
