#include "data/device_prefetch.h"

#include <ATen/ATen.h>
#include <c10/core/Event.h>
#include <c10/core/StreamGuard.h>
#include <c10/core/impl/VirtualGuardImpl.h>

namespace instinct::data {

struct DevicePrefetcher::Impl {
  Loader& loader;
  at::Device device;
  bool cuda;
  std::optional<c10::Stream> side;
  std::optional<Batch> ahead;
  bool fetched = false;  // `ahead` holds the loader's next result (possibly nullopt at epoch end)
  std::unique_ptr<c10::Event> ready;

  Impl(Loader& l, const at::Device& d) : loader(l), device(d), cuda(d.is_cuda()) {
    if (cuda) {
      c10::impl::VirtualGuardImpl g(c10::DeviceType::CUDA);
      if (!device.has_index()) device = g.getDevice();
      side = g.getStreamFromGlobalPool(device);
    }
  }

  void fetch() {
    ahead = loader.next();
    fetched = true;
    if (!ahead || !cuda) return;
    {
      c10::StreamGuard on_side(*side);
      ahead->images = ahead->images.to(device, /*non_blocking=*/true);
      if (ahead->valid.defined()) ahead->valid = ahead->valid.to(device, /*non_blocking=*/true);
    }
    ready = std::make_unique<c10::Event>(c10::DeviceType::CUDA);
    ready->record(*side);
  }
};

DevicePrefetcher::DevicePrefetcher(Loader& loader, const at::Device& device)
    : impl_(std::make_unique<Impl>(loader, device)) {}
DevicePrefetcher::~DevicePrefetcher() = default;

bool DevicePrefetcher::overlapped() const { return impl_->cuda; }

void DevicePrefetcher::start_epoch(int64_t epoch, int64_t start_batch) {
  impl_->ahead.reset();
  impl_->fetched = false;
  impl_->loader.start_epoch(epoch, start_batch);
}

std::optional<Batch> DevicePrefetcher::next() {
  Impl& I = *impl_;
  if (!I.fetched) I.fetch();
  std::optional<Batch> out = std::move(I.ahead);
  I.ahead.reset();
  I.fetched = false;
  if (!out) return out;
  if (I.cuda) {
    c10::impl::VirtualGuardImpl g(c10::DeviceType::CUDA);
    const c10::Stream compute = g.getStream(I.device);
    I.ready->block(compute);
    g.recordDataPtrOnStream(out->images.storage().data_ptr(), compute);
    if (out->valid.defined()) g.recordDataPtrOnStream(out->valid.storage().data_ptr(), compute);
    I.fetch();  // the next copy overlaps with the step that uses `out`
  } else {
    out->images = out->images.to(I.device);
    if (out->valid.defined()) out->valid = out->valid.to(I.device);
  }
  return out;
}

}  // namespace instinct::data
