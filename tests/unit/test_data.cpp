// Data pipeline tests: resize parity vs torch/torchvision fixtures (tests/python/fixtures_data.py),
// datasets, epoch order / sharding / resume, loader ordering, skipping and error propagation.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <thread>

#include <nlohmann/json.hpp>

#include "instinct/common/error.h"
#include "instinct/data/dataset.h"
#include "instinct/data/image_ops.h"
#include "data/device_prefetch.h"
#include "instinct/data/loader.h"
#include "test_helpers.h"

using instinct::test::error_of;

namespace fs = std::filesystem;
using namespace instinct::data;

namespace {

#define REQUIRE_FIXTURES()                                                             \
  const std::string fx = instinct::test::fixture_dir("data");                           \
  ASSERT_TRUE(fs::exists(fs::path(fx) / "resize" / "cases.json")) << "missing fixtures in " << fx

std::vector<float> read_f32(const std::string& path, size_t n) {
  std::ifstream f(path, std::ios::binary);
  std::vector<float> v(n);
  f.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(n * sizeof(float)));
  EXPECT_TRUE(f.good()) << path;
  return v;
}

struct Case {
  std::string name, resize;
  int size, out_h, out_w;
};

std::vector<Case> load_cases(const std::string& fx) {
  std::ifstream f(fs::path(fx) / "resize" / "cases.json");
  auto j = nlohmann::json::parse(f);
  std::vector<Case> cs;
  for (auto& e : j) cs.push_back({e["name"], e["resize"], e["size"], e["out_height"], e["out_width"]});
  return cs;
}

// Our output for a case, in [0,1] units (mean 0, std 1).
std::vector<float> run_case(const std::string& fx, const Case& c, bool round, std::vector<uint8_t>* valid = nullptr,
                            bool hflip = false) {
  PreprocessConfig pc;
  pc.image_size = c.size;
  pc.resize = c.resize;
  pc.mean = {0, 0, 0};
  pc.std = {1, 1, 1};
  pc.round_uint8 = round;
  const ImageU8 img = load_image((fs::path(fx) / "resize" / (c.name + ".png")).string());
  std::vector<float> out(3 * c.size * c.size, -7.f);
  if (valid) valid->assign(c.size * c.size, 7);
  preprocess_into(img, pc, out.data(), valid ? valid->data() : nullptr, hflip);
  return out;
}

float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  float m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

class ListDataset : public Dataset {
 public:
  explicit ListDataset(std::vector<std::string> p, int throw_at = -1) : p_(std::move(p)), throw_at_(throw_at) {}
  size_t size() const override { return p_.size(); }
  std::string path(size_t i) const override {
    if (static_cast<int>(i) == throw_at_) throw std::runtime_error("ListDataset: injected failure");
    return p_.at(i);
  }

 private:
  std::vector<std::string> p_;
  int throw_at_;
};

struct Collected {
  std::vector<std::vector<int64_t>> indices;
  std::vector<at::Tensor> images;
};

Collected collect(Loader& l, int64_t epoch, int64_t start = 0) {
  Collected c;
  l.start_epoch(epoch, start);
  int64_t expect = start;
  while (auto b = l.next()) {
    EXPECT_EQ(b->batch_index, expect++);
    EXPECT_EQ(b->epoch, epoch);
    EXPECT_EQ(b->images.size(0), static_cast<int64_t>(b->indices.size()));
    c.indices.push_back(b->indices);
    c.images.push_back(b->images);
  }
  EXPECT_EQ(expect, l.batches_per_epoch());
  return c;
}

fs::path temp_dir(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("instinct_test_data_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

}  // namespace

// ---- resize parity ----------------------------------------------------------------------------

TEST(DataResize, MatchesTorchInterpolateAntialias) {
  REQUIRE_FIXTURES();
  for (const auto& c : load_cases(fx)) {
    const auto ref = read_f32((fs::path(fx) / "resize" / (c.name + ".interp.bin")).string(), 3 * c.size * c.size);
    const auto ours = run_case(fx, c, /*round=*/false);
    const float d = max_abs_diff(ours, ref);
    EXPECT_LE(d, 1e-4f) << c.name;
    std::printf("  %-10s max |ours - F.interpolate(antialias=True)| = %.3g\n", c.name.c_str(), d);
  }
}

TEST(DataResize, RoundUint8WithinOneLevelOfTorchAndTorchvision) {
  REQUIRE_FIXTURES();
  const float tol = 1.f / 255.f + 1e-6f;
  for (const auto& c : load_cases(fx)) {
    const size_t n = 3 * c.size * c.size;
    const auto ref = read_f32((fs::path(fx) / "resize" / (c.name + ".interp.bin")).string(), n);
    const auto tv = read_f32((fs::path(fx) / "resize" / (c.name + ".tv_uint8.bin")).string(), n);
    const auto ours = run_case(fx, c, /*round=*/true);
    EXPECT_LE(max_abs_diff(ours, ref), tol) << c.name;
    EXPECT_LE(max_abs_diff(ours, tv), tol) << c.name;
    size_t off = 0;  // torchvision rounds the same float resample: differences are ties/ulps only
    for (size_t i = 0; i < n; ++i) off += std::abs(ours[i] - tv[i]) > 1e-6f;
    EXPECT_LE(off, n / 100 + 1) << c.name << ": " << off << " of " << n << " values differ from torchvision";
    std::printf("  %-10s round_uint8 vs torchvision uint8 resize: %zu of %zu values differ (by 1/255)\n",
                c.name.c_str(), off, n);
  }
}

TEST(DataResize, NormalisesWithMeanStd) {
  REQUIRE_FIXTURES();
  const Case c = load_cases(fx)[0];
  const auto ref = read_f32((fs::path(fx) / "resize" / (c.name + ".interp.bin")).string(), 3 * c.size * c.size);
  PreprocessConfig pc;
  pc.image_size = c.size;
  pc.mean = {0.485f, 0.456f, 0.406f};
  pc.std = {0.229f, 0.224f, 0.225f};
  pc.round_uint8 = false;
  std::vector<float> out(3 * c.size * c.size);
  preprocess_into(load_image((fs::path(fx) / "resize" / (c.name + ".png")).string()), pc, out.data(), nullptr);
  const size_t plane = c.size * c.size;
  for (size_t i = 0; i < out.size(); ++i) {
    const int ch = static_cast<int>(i / plane);
    ASSERT_NEAR(out[i], (ref[i] - pc.mean[ch]) / pc.std[ch], 1e-4f / pc.std[ch]) << i;
  }
}

TEST(DataResize, LongestPadValidMaskAndZeroPadding) {
  REQUIRE_FIXTURES();
  int checked = 0;
  for (const auto& c : load_cases(fx)) {
    if (c.resize != "longest_pad") continue;
    ++checked;
    PreprocessConfig pc;
    pc.image_size = c.size;
    pc.resize = "longest_pad";
    const ImageU8 img = load_image((fs::path(fx) / "resize" / (c.name + ".png")).string());
    EXPECT_EQ(resized_size(img.height, img.width, pc), std::make_pair(c.out_h, c.out_w)) << c.name;
    std::vector<uint8_t> valid;
    const auto out = run_case(fx, c, false, &valid);
    const auto flipped = run_case(fx, c, false, nullptr, /*hflip=*/true);
    for (int y = 0; y < c.size; ++y)
      for (int x = 0; x < c.size; ++x) {
        const bool in = y < c.out_h && x < c.out_w;
        ASSERT_EQ(valid[y * c.size + x], in ? 1 : 0) << c.name << " y=" << y << " x=" << x;
        for (int ch = 0; ch < 3; ++ch) {
          const size_t i = (ch * c.size + y) * c.size + x;
          if (!in) {
            ASSERT_EQ(out[i], 0.f);
            ASSERT_EQ(flipped[i], 0.f);
          } else {
            ASSERT_EQ(flipped[i], out[(ch * c.size + y) * c.size + (c.out_w - 1 - x)]);
          }
        }
      }
  }
  EXPECT_GE(checked, 2);
}

TEST(DataResize, AxisWeightsAreNormalisedAndIdentityAtScaleOne) {
  for (auto [in, out] : {std::pair{7, 29}, {53, 16}, {640, 1008}, {1000, 7}, {24, 24}}) {
    const AxisWeights w = compute_aa_weights(in, out);
    for (int i = 0; i < out; ++i) {
      float s = 0;
      for (int k = 0; k < w.count[i]; ++k) s += w.weights[i * w.max_taps + k];
      ASSERT_NEAR(s, 1.f, 1e-5f) << in << "->" << out << " i=" << i;
      ASSERT_GE(w.start[i], 0);
      ASSERT_LE(w.start[i] + w.count[i], in);
      if (in == out) ASSERT_EQ(w.weights[i * w.max_taps + (w.start[i] == i ? 0 : 1)], 1.f);
    }
  }
}

TEST(DataResize, ValidateRejectsBadConfig) {
  PreprocessConfig pc;
  pc.resize = "crop";
  EXPECT_NE(error_of([&] { validate(pc); }).find("'crop'"), std::string::npos);
  pc = {};
  pc.image_size = 0;
  EXPECT_NE(error_of([&] { validate(pc); }).find("image_size"), std::string::npos);
}

TEST(DataDecode, CorruptAndMissingFilesThrowNamingThePath) {
  REQUIRE_FIXTURES();
  int n = 0;
  for (auto& e : fs::directory_iterator(fs::path(fx) / "bad")) {
    if (e.path().filename().string().rfind("bad_", 0) != 0) continue;
    ++n;
    EXPECT_NE(error_of([&] { load_image(e.path().string()); }).find(e.path().string()), std::string::npos);
  }
  EXPECT_EQ(n, 3);
  EXPECT_NE(error_of([&] { load_image("/nonexistent/x.jpg"); }).find("/nonexistent/x.jpg"), std::string::npos);
}

TEST(DataDecode, PpmMatchesPilPixelsWithAndWithoutComments) {
  REQUIRE_FIXTURES();
  const fs::path d = fs::path(fx) / "ppm";
  const std::vector<uint8_t> expect = read_file((d / "pixels.rgb").string());
  ASSERT_EQ(expect.size(), 7u * 5 * 3);
  for (auto name : {"pil.ppm", "comment.ppm"}) {
    const ImageU8 img = load_image((d / name).string());
    EXPECT_EQ(img.width, 7) << name;
    EXPECT_EQ(img.height, 5) << name;
    EXPECT_EQ(img.rgb, expect) << name;
  }
}

TEST(DataDecode, MalformedPpmThrowsNamingTheProblem) {
  auto bytes = [](const std::string& header, size_t raster) {
    std::vector<uint8_t> b(header.begin(), header.end());
    b.resize(b.size() + raster, 7);
    return b;
  };
  auto msg = [&](const std::string& header, size_t raster) {
    return error_of([&] { decode_image(bytes(header, raster), "x.ppm"); });
  };
  EXPECT_NE(msg("P6\n4 2\n255\n", 23).find("truncated (23 of 24 bytes)"), std::string::npos);
  EXPECT_NE(msg("P6\n4 2\n65535\n", 48).find("maxval 65535"), std::string::npos);
  EXPECT_NE(msg("P6\n4\n", 0).find("height"), std::string::npos);
  EXPECT_NE(msg("P6\n0 2\n255\n", 0).find("size 0x2"), std::string::npos);
  EXPECT_NE(msg("P6\n4 2\n255", 0).find("x.ppm"), std::string::npos);
  EXPECT_EQ(decode_image(bytes("P6 4 2 255\n", 24), "ok.ppm").rgb.size(), 24u);
}

// ---- datasets ---------------------------------------------------------------------------------

TEST(DataDataset, ImageFolderIsRecursiveSortedAndCaseInsensitive) {
  REQUIRE_FIXTURES();
  ImageFolderDataset ds((fs::path(fx) / "images").string());
  ASSERT_EQ(ds.size(), 30u);
  for (size_t i = 1; i < ds.size(); ++i) EXPECT_LT(ds.path(i - 1), ds.path(i));
  EXPECT_NE(ds.path(29).find("/sub/"), std::string::npos);
  EXPECT_EQ(ds.image_id(5), 5);

  const fs::path d = temp_dir("folder");
  fs::create_directories(d / "x" / "y");
  for (auto name : {"A.JPG", "x/b.Png", "x/y/c.webp", "x/y/d.Jpeg", "e.txt", "f.bmp.txt", "g.BMP", "h.PPM"})
    std::ofstream(d / name) << "x";
  ImageFolderDataset ds2(d.string());
  ASSERT_EQ(ds2.size(), 6u);
  EXPECT_EQ(fs::path(ds2.path(0)).filename(), "A.JPG");
  fs::remove_all(d);
}

TEST(DataDataset, MissingOrEmptyFolderErrorNamesIt) {
  EXPECT_NE(error_of([] { ImageFolderDataset("/no/such/folder_xyz"); }).find("/no/such/folder_xyz"),
            std::string::npos);
  const fs::path d = temp_dir("empty");
  std::ofstream(d / "notes.txt") << "x";
  const std::string msg = error_of([&] { ImageFolderDataset ds(d.string()); });
  EXPECT_NE(msg.find(d.string()), std::string::npos) << msg;
  EXPECT_NE(msg.find("no .jpg"), std::string::npos) << msg;
  fs::remove_all(d);
}

TEST(DataDataset, CocoParsesImagesAndReportsMalformedJson) {
  const fs::path d = temp_dir("coco");
  const std::string good = (d / "ann.json").string();
  std::ofstream(good) << R"({"images":[{"id":42,"file_name":"a/x.jpg","width":640,"height":480},
                                       {"id":7,"file_name":"y.png","width":10,"height":20}],
                           "annotations":[]})";
  CocoImageDataset ds(good, "/data/coco");
  ASSERT_EQ(ds.size(), 2u);
  EXPECT_EQ(ds.image_id(0), 42);
  EXPECT_EQ(ds.image_id(1), 7);
  EXPECT_EQ(ds.path(0), "/data/coco/a/x.jpg");
  EXPECT_EQ(ds.image(1).width, 10);
  EXPECT_EQ(ds.image(1).height, 20);

  auto expect_error = [&](const std::string& text, const std::string& needle) {
    const std::string p = (d / "bad.json").string();
    std::ofstream(p) << text;
    const std::string msg = error_of([&] { CocoImageDataset b(p, "/r"); });
    EXPECT_NE(msg.find(p), std::string::npos) << msg;
    EXPECT_NE(msg.find(needle), std::string::npos) << msg;
  };
  expect_error("{\"images\": [", "invalid JSON");
  expect_error("{\"annotations\": []}", "\"images\"");
  expect_error(R"({"images":[{"id":1,"file_name":"a.jpg"},{"id":"2","file_name":"b.jpg"}]})", "images[1].id");
  expect_error(R"({"images":[{"id":1}]})", "images[0].file_name");
  EXPECT_NE(error_of([&] { CocoImageDataset b((d / "missing.json").string(), "/r"); }).find("missing.json"),
            std::string::npos);
  fs::remove_all(d);
}

// ---- order, sharding --------------------------------------------------------------------------

TEST(DataOrder, PermutationIsDeterministicPerSeedAndEpoch) {
  const auto a = epoch_permutation(1000, 5, 3, true);
  EXPECT_EQ(a, epoch_permutation(1000, 5, 3, true));
  EXPECT_NE(a, epoch_permutation(1000, 5, 4, true));
  EXPECT_NE(a, epoch_permutation(1000, 6, 3, true));
  auto s = a;
  std::sort(s.begin(), s.end());
  EXPECT_EQ(s, epoch_permutation(1000, 5, 3, false));
  // Golden values (from an independent Python splitmix64 + Fisher-Yates): the order must not change
  // across compilers, platforms or releases.
  EXPECT_EQ(epoch_permutation(10, 0, 0, true), (std::vector<int64_t>{6, 9, 8, 0, 2, 5, 7, 4, 1, 3}));
}

TEST(DataOrder, ShardsCoverEveryIndexOncePerEpoch) {
  for (size_t n : {100u, 103u, 3u}) {
    const int W = 4;
    const auto order = epoch_permutation(n, 1, 2, true);
    std::map<int64_t, int> seen;
    size_t total = 0;
    for (int r = 0; r < W; ++r) {
      const auto sh = shard_indices(order, r, W);
      EXPECT_EQ(sh.size(), (n + W - 1) / W);
      for (auto i : sh) ++seen[i];
      total += sh.size();
    }
    EXPECT_EQ(seen.size(), n);
    EXPECT_EQ(total - n, (W - n % W) % W);  // padding by wrapping: that many repeats
    for (auto [i, k] : seen) EXPECT_LE(k, 2);
  }
}

TEST(DataOrder, HflipIsAPureFunction) {
  int flips = 0;
  for (int i = 0; i < 1000; ++i) {
    EXPECT_EQ(sample_hflip(3, 1, i, 0.5f), sample_hflip(3, 1, i, 0.5f));
    flips += sample_hflip(3, 1, i, 0.5f);
    EXPECT_FALSE(sample_hflip(3, 1, i, 0.f));
    EXPECT_TRUE(sample_hflip(3, 1, i, 1.f));
  }
  EXPECT_GT(flips, 400);
  EXPECT_LT(flips, 600);
}

// ---- loader -----------------------------------------------------------------------------------

namespace {
PreprocessConfig small_pc(const std::string& resize = "squash") {
  PreprocessConfig pc;
  pc.image_size = 32;
  pc.resize = resize;
  return pc;
}
}  // namespace

TEST(DataLoader, BatchesAreInOrderAndIdenticalForAnyWorkerCount) {
  REQUIRE_FIXTURES();
  auto ds = std::make_shared<ImageFolderDataset>((fs::path(fx) / "images").string());
  LoaderConfig lc;
  lc.batch_size = 4;
  lc.seed = 11;
  lc.hflip_prob = 0.5f;
  lc.num_workers = 1;
  lc.prefetch_batches = 1;
  Loader a(ds, small_pc(), lc);
  lc.num_workers = 3;
  lc.prefetch_batches = 4;
  Loader b(ds, small_pc(), lc);
  EXPECT_EQ(a.batches_per_epoch(), 7);  // 30 / 4, drop_last
  const auto ca = collect(a, 2), cb = collect(b, 2);
  ASSERT_EQ(ca.indices, cb.indices);
  std::set<int64_t> uniq;
  for (size_t k = 0; k < ca.images.size(); ++k) {
    EXPECT_TRUE(torch::equal(ca.images[k], cb.images[k])) << "batch " << k;
    EXPECT_EQ(ca.images[k].sizes(), (std::vector<int64_t>{4, 3, 32, 32}));
    for (auto i : ca.indices[k]) uniq.insert(i);
  }
  EXPECT_EQ(uniq.size(), 28u);
  // Each row equals preprocessing the named file directly (with the same flip).
  const auto& first = ca.indices[0];
  for (size_t j = 0; j < first.size(); ++j) {
    std::vector<float> ref(3 * 32 * 32);
    preprocess_into(load_image(ds->path(first[j])), small_pc(), ref.data(), nullptr,
                    sample_hflip(11, 2, first[j], 0.5f));
    const at::Tensor row = ca.images[0][static_cast<int64_t>(j)].contiguous();
    EXPECT_EQ(std::memcmp(row.data_ptr<float>(), ref.data(), ref.size() * 4), 0) << j;
  }
  // Another epoch, another order.
  EXPECT_NE(collect(a, 3).indices, ca.indices);
}

// The prefetcher hands out exactly the loader's batches, on the device; abandoning an epoch with a
// batch fetched ahead and resuming mid-epoch work as with the loader itself. On CUDA (GPU machine)
// the copies come from pinned memory on a side stream. Binary PPM images, which every build
// decodes (the GPU machine's build has no JPEG codec).
TEST(DataLoader, DevicePrefetcherMatchesLoaderOnCpuAndCuda) {
  const fs::path dir = temp_dir("prefetch");
  for (int i = 0; i < 30; ++i) {
    const int w = 20 + 7 * i, h = 60 - i;
    std::ofstream f(dir / ("img_" + std::to_string(100 + i) + ".ppm"), std::ios::binary);
    f << "P6\n" << w << " " << h << "\n255\n";
    for (int k = 0; k < w * h * 3; ++k) f.put(static_cast<char>((k * 37 + i * 11) & 0xff));
  }
  auto ds = std::make_shared<ImageFolderDataset>(dir.string());
  LoaderConfig lc;
  lc.batch_size = 4;
  lc.seed = 11;
  lc.pin_memory = true;
  std::vector<at::Device> devices{at::Device(at::kCPU)};
  if (torch::cuda::is_available()) devices.emplace_back(at::kCUDA, 0);
  for (const auto& dev : devices) {
    Loader a(ds, small_pc("longest_pad"), lc), b(ds, small_pc("longest_pad"), lc);
    DevicePrefetcher feed(b, dev);
    EXPECT_EQ(feed.overlapped(), dev.is_cuda());
    int64_t batches = 0;
    for (int64_t epoch : {0, 0, 1}) {
      const int64_t start = epoch == 1 ? 2 : 0;
      a.start_epoch(epoch, start);
      feed.start_epoch(epoch, start);
      for (int k = 0;; ++k) {
        auto ra = a.next();
        auto rb = feed.next();
        ASSERT_EQ(ra.has_value(), rb.has_value());
        if (!ra) break;
        ++batches;
        EXPECT_EQ(ra->indices, rb->indices);
        EXPECT_EQ(ra->batch_index, rb->batch_index);
        EXPECT_EQ(rb->images.device(), dev);
        EXPECT_TRUE(torch::equal(ra->images, rb->images.cpu())) << dev << " epoch " << epoch << " batch " << k;
        ASSERT_TRUE(rb->valid.defined());
        EXPECT_EQ(rb->valid.device(), dev);
        EXPECT_TRUE(torch::equal(ra->valid, rb->valid.cpu()));
        if (epoch == 0 && batches == 3) break;  // abandon the first pass with a batch fetched ahead
      }
    }
    EXPECT_EQ(batches, 3 + 7 + 5);
  }
  fs::remove_all(dir);
}

TEST(DataLoader, StartBatchResumesMidEpochExactly) {
  REQUIRE_FIXTURES();
  auto ds = std::make_shared<ImageFolderDataset>((fs::path(fx) / "images").string());
  LoaderConfig lc;
  lc.batch_size = 3;
  lc.seed = 5;
  lc.hflip_prob = 0.5f;
  lc.drop_last = false;
  Loader l(ds, small_pc(), lc);
  const auto full = collect(l, 4);
  ASSERT_EQ(full.indices.size(), 10u);
  l.start_epoch(4);
  (void)l.next();  // abandon the epoch with batches prefetched
  const auto resumed = collect(l, 4, 6);
  ASSERT_EQ(resumed.indices.size(), 4u);
  for (size_t k = 0; k < 4; ++k) {
    EXPECT_EQ(resumed.indices[k], full.indices[6 + k]);
    EXPECT_TRUE(torch::equal(resumed.images[k], full.images[6 + k]));
  }
  l.start_epoch(4, l.batches_per_epoch());
  EXPECT_FALSE(l.next().has_value());
  EXPECT_NE(error_of([&] { l.start_epoch(4, 11); }).find("start_batch"), std::string::npos);
}

// Several loaders created and decoding at the same time (a trainer's train and held-out loaders do):
// each gets exactly what it gets alone. Workers once each reset OpenCV's process-wide thread count,
// which is not thread-safe and crashed a few percent of such starts.
TEST(DataLoader, ConcurrentLoadersMatchSequentialOnes) {
  REQUIRE_FIXTURES();
  auto ds = std::make_shared<ImageFolderDataset>((fs::path(fx) / "images").string());
  LoaderConfig lc;
  lc.batch_size = 5;
  lc.num_workers = 3;
  auto reference = [&](uint64_t seed) {
    lc.seed = seed;
    Loader l(ds, small_pc(), lc);
    return collect(l, 0);
  };
  std::vector<Collected> want;
  for (uint64_t k = 0; k < 4; ++k) want.push_back(reference(k));
  for (int round = 0; round < 8; ++round) {
    std::vector<Collected> got(4);
    std::vector<std::thread> threads;
    for (uint64_t k = 0; k < 4; ++k)
      threads.emplace_back([&, k] {
        LoaderConfig c = lc;
        c.seed = k;
        Loader l(ds, small_pc(), c);
        got[k] = collect(l, 0);
      });
    for (auto& t : threads) t.join();
    for (size_t k = 0; k < 4; ++k) {
      ASSERT_EQ(got[k].indices, want[k].indices) << "round " << round << " loader " << k;
      for (size_t b = 0; b < got[k].images.size(); ++b) ASSERT_TRUE(torch::equal(got[k].images[b], want[k].images[b]));
    }
  }
}

TEST(DataLoader, ShardedLoadersCoverTheEpoch) {
  REQUIRE_FIXTURES();
  auto ds = std::make_shared<ImageFolderDataset>((fs::path(fx) / "images").string());
  std::multiset<int64_t> all;
  for (int r = 0; r < 4; ++r) {
    LoaderConfig lc;
    lc.batch_size = 2;
    lc.drop_last = false;
    lc.rank = r;
    lc.world_size = 4;
    Loader l(ds, small_pc(), lc);
    EXPECT_EQ(l.samples_per_epoch(), 8);
    for (auto& b : collect(l, 1).indices) all.insert(b.begin(), b.end());
  }
  EXPECT_EQ(all.size(), 32u);  // 30 padded to 32 by wrapping
  for (int64_t i = 0; i < 30; ++i) EXPECT_GE(all.count(i), 1u) << i;
}

TEST(DataLoader, CorruptImagesAreSkippedAndCounted) {
  REQUIRE_FIXTURES();
  auto ds = std::make_shared<ImageFolderDataset>((fs::path(fx) / "bad").string());
  ASSERT_EQ(ds->size(), 15u);  // bad_00000..2 sort first
  LoaderConfig lc;
  lc.batch_size = 4;
  lc.shuffle = false;
  lc.drop_last = false;
  lc.max_bad_fraction = 0.5;
  Loader l(ds, small_pc(), lc);
  const auto c = collect(l, 0);
  ASSERT_EQ(c.indices.size(), 4u);
  EXPECT_EQ(c.indices[0], (std::vector<int64_t>{3}));
  EXPECT_EQ(c.images[0].sizes(), (std::vector<int64_t>{1, 3, 32, 32}));
  EXPECT_EQ(c.indices[3], (std::vector<int64_t>{12, 13, 14}));
  EXPECT_EQ(l.num_skipped(), 3);
  EXPECT_EQ(l.num_attempted(), 15);
  // Row 0 of the narrowed first batch is image 3, not stale data of a skipped row.
  std::vector<float> ref(3 * 32 * 32);
  preprocess_into(load_image(ds->path(3)), small_pc(), ref.data(), nullptr);
  EXPECT_EQ(std::memcmp(c.images[0].data_ptr<float>(), ref.data(), ref.size() * 4), 0);
}

TEST(DataLoader, TooManyBadImagesThrowsWithCountFractionAndLimit) {
  REQUIRE_FIXTURES();
  auto ds = std::make_shared<ImageFolderDataset>((fs::path(fx) / "bad").string());
  LoaderConfig lc;
  lc.batch_size = 4;
  lc.shuffle = false;
  lc.drop_last = false;
  lc.max_bad_fraction = 0.01;
  Loader l(ds, small_pc(), lc);
  l.start_epoch(0);
  const std::string msg = error_of([&] { while (l.next()) {} });
  EXPECT_NE(msg.find("skipped 3 "), std::string::npos) << msg;
  EXPECT_NE(msg.find("of 15"), std::string::npos) << msg;
  EXPECT_NE(msg.find("0.2"), std::string::npos) << msg;
  EXPECT_NE(msg.find("max_bad_fraction = 0.01"), std::string::npos) << msg;
}

TEST(DataLoader, WorkerExceptionsPropagateToNext) {
  REQUIRE_FIXTURES();
  auto folder = ImageFolderDataset((fs::path(fx) / "images").string());
  std::vector<std::string> paths;
  for (size_t i = 0; i < folder.size(); ++i) paths.push_back(folder.path(i));
  auto ds = std::make_shared<ListDataset>(paths, /*throw_at=*/9);
  LoaderConfig lc;
  lc.batch_size = 4;
  lc.shuffle = false;
  Loader l(ds, small_pc(), lc);
  l.start_epoch(0);
  EXPECT_TRUE(l.next().has_value());
  EXPECT_TRUE(l.next().has_value());
  EXPECT_THROW(l.next(), std::runtime_error);  // batch 2 holds index 9
  EXPECT_THROW(l.next(), std::runtime_error);
  l.start_epoch(0, 3);  // recoverable: skip past it
  EXPECT_EQ(l.next()->batch_index, 3);
}

TEST(DataLoader, LongestPadBatchesCarryValidMasks) {
  REQUIRE_FIXTURES();
  auto ds = std::make_shared<ImageFolderDataset>((fs::path(fx) / "images").string());
  LoaderConfig lc;
  lc.batch_size = 5;
  lc.hflip_prob = 0.5f;
  const auto pc = small_pc("longest_pad");
  Loader l(ds, pc, lc);
  l.start_epoch(0);
  int n = 0;
  while (auto b = l.next()) {
    ASSERT_TRUE(b->valid.defined());
    ASSERT_EQ(b->valid.sizes(), (std::vector<int64_t>{5, 32, 32}));
    for (int64_t j = 0; j < 5; ++j, ++n) {
      const ImageU8 img = load_image(ds->path(b->indices[j]));
      const auto [oh, ow] = resized_size(img.height, img.width, pc);
      const at::Tensor v = b->valid[j];
      EXPECT_EQ(v.sum().item<int64_t>(), oh * ow);
      EXPECT_TRUE(v.slice(0, 0, oh).slice(1, 0, ow).all().item<bool>());
      EXPECT_EQ(b->images[j].masked_select(v.logical_not().unsqueeze(0).expand({3, 32, 32})).abs().sum().item<float>(), 0.f);
    }
  }
  EXPECT_EQ(n, 30);
}

TEST(DataLoader, ConfigErrorsAndMisuse) {
  REQUIRE_FIXTURES();
  auto ds = std::make_shared<ImageFolderDataset>((fs::path(fx) / "images").string());
  LoaderConfig lc;
  lc.rank = 2;
  lc.world_size = 2;
  EXPECT_NE(error_of([&] { Loader l(ds, small_pc(), lc); }).find("LoaderConfig.rank"), std::string::npos);
  lc = {};
  lc.batch_size = 0;
  EXPECT_NE(error_of([&] { Loader l(ds, small_pc(), lc); }).find("batch_size"), std::string::npos);
  Loader l(ds, small_pc(), LoaderConfig{});
  EXPECT_NE(error_of([&] { l.next(); }).find("start_epoch"), std::string::npos);
}
