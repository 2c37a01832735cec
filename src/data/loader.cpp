#include "instinct/data/loader.h"

#include <ATen/ATen.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>
#include <unordered_set>

#ifdef INSTINCT_WITH_IMGCODECS
#include <opencv2/core.hpp>
#endif

#include "instinct/common/error.h"
#include "common/random.h"

namespace instinct::data {

namespace {

uint64_t mix(uint64_t a, uint64_t b) {
  uint64_t s = a;
  uint64_t h = splitmix64(s);
  s = h ^ b;
  return splitmix64(s);
}

// Unbiased integer in [0, n) by rejection (portable, unlike std::uniform_int_distribution).
uint64_t bounded(uint64_t& s, uint64_t n) {
  const uint64_t threshold = (0 - n) % n;
  for (;;) {
    const uint64_t r = splitmix64(s);
    if (r >= threshold) return r % n;
  }
}

constexpr uint64_t kPermSalt = 0x7065726D75746531ull;  // "permute1"
constexpr uint64_t kFlipSalt = 0x68666C6970303031ull;  // "hflip001"

}  // namespace

std::vector<int64_t> epoch_permutation(size_t n, uint64_t seed, int64_t epoch, bool shuffle) {
  std::vector<int64_t> p(n);
  for (size_t i = 0; i < n; ++i) p[i] = static_cast<int64_t>(i);
  if (!shuffle || n < 2) return p;
  uint64_t s = mix(mix(seed, kPermSalt), static_cast<uint64_t>(epoch));
  for (size_t i = n - 1; i > 0; --i) std::swap(p[i], p[bounded(s, i + 1)]);
  return p;
}

std::vector<int64_t> shard_indices(const std::vector<int64_t>& order, int rank, int world_size) {
  INSTINCT_ASSERT(world_size >= 1 && rank >= 0 && rank < world_size);
  const size_t n = order.size();
  if (n == 0) return {};
  const size_t per_rank = (n + world_size - 1) / world_size;
  std::vector<int64_t> out(per_rank);
  for (size_t k = 0; k < per_rank; ++k) out[k] = order[(rank + k * world_size) % n];
  return out;
}

bool sample_hflip(uint64_t seed, int64_t epoch, int64_t index, float prob) {
  if (prob <= 0.f) return false;
  const uint64_t h = mix(mix(mix(seed, kFlipSalt), static_cast<uint64_t>(epoch)),
                         static_cast<uint64_t>(index));
  return static_cast<double>(h >> 11) * 0x1.0p-53 < prob;
}

struct Loader::Impl {
  struct Slot {
    int64_t batch_index = 0;
    std::vector<int64_t> idx;
    at::Tensor images, valid;
    std::vector<uint8_t> ok;
    std::vector<std::exception_ptr> errors;
    size_t next_claim = 0;
    size_t remaining = 0;
    bool ready = false;
  };

  std::shared_ptr<const Dataset> ds;
  PreprocessConfig pc;
  LoaderConfig lc;
  int64_t per_rank = 0, bpe = 0;

  std::mutex mu;
  std::condition_variable cv_work, cv_ready;
  bool stop = false, started = false;
  int64_t epoch = 0, next_batch = 0, next_open = 0;
  std::vector<int64_t> order;
  std::deque<std::shared_ptr<Slot>> slots;
  std::vector<std::thread> workers;

  // Unpinned batch buffers handed out earlier, reused once the consumer has dropped every reference
  // (fresh 100 MB allocations are mmap'd and page-faulted on every batch). Pinned buffers are not
  // pooled: the CUDA host allocator caches them and knows about in-flight async copies.
  std::vector<at::Tensor> pool;

  std::atomic<int64_t> attempted{0}, skipped{0};
  std::mutex warn_mu;
  std::unordered_set<std::string> warned;

  void open_slots() {  // caller holds mu
    const int64_t S = pc.image_size;
    const bool pin = lc.pin_memory && at::hasCUDA();
    while (next_open < bpe && next_open < next_batch + lc.prefetch_batches) {
      auto s = std::make_shared<Slot>();
      s->batch_index = next_open;
      const int64_t b0 = next_open * lc.batch_size;
      const int64_t b1 = std::min<int64_t>(b0 + lc.batch_size, per_rank);
      s->idx.assign(order.begin() + b0, order.begin() + b1);
      const int64_t B = b1 - b0;
      auto opts = at::TensorOptions().dtype(at::kFloat).pinned_memory(pin);
      s->images = take({B, 3, S, S}, opts);
      if (pc.resize == "longest_pad") s->valid = take({B, S, S}, opts.dtype(at::kBool));
      s->ok.assign(B, 0);
      s->errors.assign(B, nullptr);
      s->remaining = static_cast<size_t>(B);
      slots.push_back(std::move(s));
      ++next_open;
    }
    cv_work.notify_all();
  }

  at::Tensor take(at::IntArrayRef sizes, const at::TensorOptions& opts) {  // caller holds mu
    for (size_t i = 0; i < pool.size(); ++i) {
      at::Tensor& t = pool[i];
      if (t.use_count() == 1 && t.storage().use_count() == 1 && t.sizes() == sizes &&
          t.dtype() == opts.dtype()) {
        at::Tensor out = std::move(t);
        pool.erase(pool.begin() + static_cast<std::ptrdiff_t>(i));
        return out;
      }
    }
    return at::empty(sizes, opts);
  }

  void recycle(const Slot& s) {  // caller holds mu
    if (s.images.is_pinned()) return;
    for (const at::Tensor* t : {&s.images, &s.valid})
      if (t->defined()) pool.push_back(*t);
    const size_t cap = 2 * (static_cast<size_t>(lc.prefetch_batches) + 2);
    if (pool.size() > cap) pool.erase(pool.begin(), pool.begin() + static_cast<std::ptrdiff_t>(pool.size() - cap));
  }

  std::shared_ptr<Slot> claimable() {  // caller holds mu
    for (auto& s : slots)
      if (s->next_claim < s->idx.size()) return s;
    return nullptr;
  }

  bool load_sample(Slot& s, size_t j, int64_t ep) {
    const int64_t index = s.idx[j];
    const std::string path = ds->path(static_cast<size_t>(index));
    ImageU8 img;
    try {
      img = load_image(path);
    } catch (const Error& e) {
      std::lock_guard<std::mutex> lk(warn_mu);
      if (warned.insert(path).second) spdlog::warn("loader: skipping image: {}", e.what());
      return false;
    }
    const int64_t S = pc.image_size;
    float* dst = s.images.data_ptr<float>() + static_cast<int64_t>(j) * 3 * S * S;
    uint8_t* valid = s.valid.defined()
                         ? reinterpret_cast<uint8_t*>(s.valid.data_ptr<bool>()) + static_cast<int64_t>(j) * S * S
                         : nullptr;
    preprocess_into(img, pc, dst, valid, sample_hflip(lc.seed, ep, index, lc.hflip_prob));
    return true;
  }

  void worker_loop() {
    for (;;) {
      std::shared_ptr<Slot> s;
      size_t j = 0;
      int64_t ep = 0;
      {
        std::unique_lock<std::mutex> lk(mu);
        cv_work.wait(lk, [&] { return stop || (s = claimable()) != nullptr; });
        if (stop) return;
        j = s->next_claim++;
        ep = epoch;
      }
      bool ok = false;
      std::exception_ptr err;
      try {
        ok = load_sample(*s, j, ep);
      } catch (...) {
        err = std::current_exception();
      }
      std::lock_guard<std::mutex> lk(mu);
      s->ok[j] = ok;
      s->errors[j] = err;
      if (--s->remaining == 0) {
        s->ready = true;
        cv_ready.notify_all();
      }
    }
  }

  void check_fraction(bool epoch_end) const {
    const int64_t a = attempted.load(), k = skipped.load();
    if (k == 0 || a == 0 || (a < 20 && !epoch_end)) return;
    const double frac = static_cast<double>(k) / static_cast<double>(a);
    INSTINCT_CHECK(frac <= lc.max_bad_fraction, "loader: skipped ", k, " unreadable images of ", a,
                   " attempted (fraction ", frac, ") which exceeds LoaderConfig.max_bad_fraction = ",
                   lc.max_bad_fraction, "; see the warnings above for the files");
  }
};

Loader::Loader(std::shared_ptr<const Dataset> dataset, PreprocessConfig preprocess, LoaderConfig config)
    : impl_(std::make_unique<Impl>()) {
  validate(preprocess);
  INSTINCT_CHECK(dataset != nullptr && dataset->size() > 0, "Loader: dataset is null or empty");
  const auto& c = config;
  INSTINCT_CHECK(c.batch_size >= 1, "LoaderConfig.batch_size = ", c.batch_size, ": expected >= 1");
  INSTINCT_CHECK(c.num_workers >= 1, "LoaderConfig.num_workers = ", c.num_workers, ": expected >= 1");
  INSTINCT_CHECK(c.prefetch_batches >= 1, "LoaderConfig.prefetch_batches = ", c.prefetch_batches,
                 ": expected >= 1");
  INSTINCT_CHECK(c.world_size >= 1, "LoaderConfig.world_size = ", c.world_size, ": expected >= 1");
  INSTINCT_CHECK(c.rank >= 0 && c.rank < c.world_size, "LoaderConfig.rank = ", c.rank,
                 ": expected in [0, world_size = ", c.world_size, ")");
  INSTINCT_CHECK(c.max_bad_fraction >= 0 && c.max_bad_fraction <= 1,
                 "LoaderConfig.max_bad_fraction = ", c.max_bad_fraction, ": expected in [0, 1]");
  INSTINCT_CHECK(c.hflip_prob >= 0 && c.hflip_prob <= 1, "LoaderConfig.hflip_prob = ", c.hflip_prob,
                 ": expected in [0, 1]");
  auto& m = *impl_;
  m.ds = std::move(dataset);
  m.pc = std::move(preprocess);
  m.lc = config;
  const int64_t n = static_cast<int64_t>(m.ds->size());
  m.per_rank = (n + c.world_size - 1) / c.world_size;
  m.bpe = c.drop_last ? m.per_rank / c.batch_size : (m.per_rank + c.batch_size - 1) / c.batch_size;
#ifdef INSTINCT_WITH_IMGCODECS
  // OpenCV's thread count is process-wide and setting it is not thread-safe (it rebuilds the
  // parallel backend, possibly under another thread's resize): once, before any worker starts.
  static std::once_flag cv_threads;
  std::call_once(cv_threads, [] { cv::setNumThreads(1); });
#endif
  for (int i = 0; i < c.num_workers; ++i) m.workers.emplace_back([&m] { m.worker_loop(); });
}

Loader::~Loader() {
  {
    std::lock_guard<std::mutex> lk(impl_->mu);
    impl_->stop = true;
    impl_->slots.clear();
  }
  impl_->cv_work.notify_all();
  for (auto& t : impl_->workers) t.join();
}

int64_t Loader::batches_per_epoch() const { return impl_->bpe; }
int64_t Loader::samples_per_epoch() const { return impl_->per_rank; }
int64_t Loader::num_skipped() const { return impl_->skipped.load(); }
int64_t Loader::num_attempted() const { return impl_->attempted.load(); }
const std::vector<int64_t>& Loader::epoch_order() const { return impl_->order; }

void Loader::start_epoch(int64_t epoch, int64_t start_batch) {
  auto& m = *impl_;
  INSTINCT_CHECK(start_batch >= 0 && start_batch <= m.bpe, "Loader::start_epoch: start_batch = ",
                 start_batch, ": expected in [0, ", m.bpe, "]");
  std::lock_guard<std::mutex> lk(m.mu);
  m.slots.clear();  // workers still decoding an old slot keep it alive and then drop it
  m.order = shard_indices(epoch_permutation(m.ds->size(), m.lc.seed, epoch, m.lc.shuffle),
                          m.lc.rank, m.lc.world_size);
  m.epoch = epoch;
  m.next_batch = m.next_open = start_batch;
  m.started = true;
  m.open_slots();
}

std::optional<Batch> Loader::next() {
  auto& m = *impl_;
  for (;;) {
    std::shared_ptr<Impl::Slot> s;
    {
      std::unique_lock<std::mutex> lk(m.mu);
      INSTINCT_CHECK(m.started, "Loader::next() called before Loader::start_epoch()");
      if (m.next_batch >= m.bpe) {
        lk.unlock();
        m.check_fraction(true);
        return std::nullopt;
      }
      s = m.slots.front();
      m.cv_ready.wait(lk, [&] { return s->ready; });
      for (auto& e : s->errors)
        if (e) std::rethrow_exception(e);  // slot stays queued: a retry rethrows
      m.slots.pop_front();
      ++m.next_batch;
      m.recycle(*s);
      m.open_slots();
    }
    const int64_t B = static_cast<int64_t>(s->idx.size());
    const int64_t S = m.pc.image_size;
    Batch b;
    b.epoch = m.epoch;
    b.batch_index = s->batch_index;
    int64_t good = 0;
    float* img = s->images.data_ptr<float>();
    uint8_t* val = s->valid.defined() ? reinterpret_cast<uint8_t*>(s->valid.data_ptr<bool>()) : nullptr;
    for (int64_t j = 0; j < B; ++j) {
      if (!s->ok[j]) continue;
      if (good != j) {  // compact in place: rows stay in batch order
        std::memmove(img + good * 3 * S * S, img + j * 3 * S * S, sizeof(float) * 3 * S * S);
        if (val) std::memmove(val + good * S * S, val + j * S * S, S * S);
      }
      b.indices.push_back(s->idx[j]);
      ++good;
    }
    m.attempted += B;
    m.skipped += B - good;
    m.check_fraction(m.next_batch >= m.bpe);
    if (good == 0) continue;  // every image of this batch was unreadable
    b.images = good == B ? s->images : s->images.narrow(0, 0, good);
    if (s->valid.defined()) b.valid = good == B ? s->valid : s->valid.narrow(0, 0, good);
    return b;
  }
}

}  // namespace instinct::data
