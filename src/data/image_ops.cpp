#include "instinct/data/image_ops.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>

#ifdef INSTINCT_WITH_IMGCODECS
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#endif

#include "instinct/common/error.h"

namespace instinct::data {

void validate(const PreprocessConfig& cfg) {
  INSTINCT_CHECK(cfg.image_size > 0, "PreprocessConfig.image_size = ", cfg.image_size,
                 ": expected > 0");
  INSTINCT_CHECK(cfg.resize == "squash" || cfg.resize == "longest_pad", "PreprocessConfig.resize = '",
                 cfg.resize, "': expected 'squash' or 'longest_pad'");
  for (int c = 0; c < 3; ++c)
    INSTINCT_CHECK(cfg.std[c] != 0.f, "PreprocessConfig.std[", c, "] = 0: expected non-zero");
}

std::vector<uint8_t> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  INSTINCT_CHECK(f.good(), "cannot open image file '", path, "'");
  const std::streamoff n = f.tellg();
  INSTINCT_CHECK(n >= 0, "cannot read image file '", path, "'");
  std::vector<uint8_t> bytes(static_cast<size_t>(n));
  f.seekg(0);
  if (n > 0) f.read(reinterpret_cast<char*>(bytes.data()), n);
  INSTINCT_CHECK(f.good() || n == 0, "cannot read image file '", path, "'");
  return bytes;
}

namespace {
// Binary PPM (P6, maxval 255): header tokens separated by whitespace, '#' comments to end of line,
// then exactly one whitespace byte before the raster.
ImageU8 decode_ppm(const std::vector<uint8_t>& b, const std::string& name) {
  size_t i = 2;
  auto token = [&](const char* what) {
    for (;;) {
      while (i < b.size() && std::isspace(b[i])) ++i;
      if (i < b.size() && b[i] == '#') {
        while (i < b.size() && b[i] != '\n') ++i;
        continue;
      }
      break;
    }
    long v = 0;
    size_t start = i;
    while (i < b.size() && std::isdigit(b[i]) && v <= 1000000) v = v * 10 + (b[i++] - '0');
    INSTINCT_CHECK(i > start && v <= 1000000, "cannot decode image '", name, "': bad PPM header (", what, ")");
    return static_cast<int>(v);
  };
  ImageU8 img;
  img.width = token("width");
  img.height = token("height");
  const int maxval = token("maxval");
  INSTINCT_CHECK(img.width > 0 && img.height > 0, "cannot decode image '", name, "': PPM size ", img.width, "x",
                 img.height, " (expected > 0)");
  INSTINCT_CHECK(maxval == 255, "cannot decode image '", name, "': PPM maxval ", maxval, " (expected 255)");
  INSTINCT_CHECK(i < b.size() && std::isspace(b[i]), "cannot decode image '", name, "': bad PPM header");
  ++i;
  const size_t n = static_cast<size_t>(img.width) * img.height * 3;
  INSTINCT_CHECK(b.size() - i >= n, "cannot decode image '", name, "': PPM raster truncated (", b.size() - i,
                 " of ", n, " bytes)");
  img.rgb.assign(b.begin() + static_cast<std::ptrdiff_t>(i), b.begin() + static_cast<std::ptrdiff_t>(i + n));
  return img;
}

#ifdef INSTINCT_WITH_IMGCODECS
constexpr int64_t kMaxPixels = int64_t(1) << 28;  // 16384 x 16384

uint32_t be(const std::vector<uint8_t>& b, size_t i, int n) {
  uint32_t v = 0;
  for (int k = 0; k < n; ++k) v = v << 8 | b[i + k];
  return v;
}
uint32_t le(const std::vector<uint8_t>& b, size_t i, int n) {
  uint32_t v = 0;
  for (int k = n - 1; k >= 0; --k) v = v << 8 | b[i + k];
  return v;
}

// Pixel count a JPEG / PNG / BMP / WebP header declares (0 when the header does not say), read before
// OpenCV allocates the image: a 54-byte BMP may claim 30000 x 30000. Other formats OpenCV would sniff
// (TIFF, EXR, JPEG 2000, ...) are refused: those decoders are attack surface the tools do not need.
uint64_t declared_pixels(const std::vector<uint8_t>& b, const std::string& name) {  // (< 2^64: 32-bit sides)
  const size_t n = b.size();
  if (n >= 24 && be(b, 0, 4) == 0x89504E47u && be(b, 12, 4) == 0x49484452u)  // PNG, IHDR
    return uint64_t(be(b, 16, 4)) * be(b, 20, 4);
  if (n >= 26 && b[0] == 'B' && b[1] == 'M') {
    if (le(b, 14, 4) == 12) return uint64_t(le(b, 18, 2)) * le(b, 20, 2);
    return uint64_t(std::abs(int64_t(int32_t(le(b, 18, 4))))) * uint64_t(std::abs(int64_t(int32_t(le(b, 22, 4)))));
  }
  if (n >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF) {  // JPEG: walk the segments to a SOFn
    // Like libjpeg, skip stray bytes between segments; a JPEG without a frame header before its scan
    // is refused rather than trusted to the decoder.
    for (size_t i = 2; i + 4 <= n;) {
      if (b[i] != 0xFF) { ++i; continue; }
      const uint8_t m = b[i + 1];
      if (m == 0xFF) { ++i; continue; }
      if (m == 0xD8 || m == 0x01 || (m >= 0xD0 && m <= 0xD7)) { i += 2; continue; }
      if (m == 0xDA || m == 0xD9) break;
      if (m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC)
        return i + 9 <= n ? uint64_t(be(b, i + 5, 2)) * be(b, i + 7, 2) : 0;
      i += 2 + std::max<uint32_t>(2, be(b, i + 2, 2));
    }
    fail("cannot decode image '", name, "': JPEG has no frame header (SOF) before its image data");
  }
  if (n >= 12 && be(b, 0, 4) == 0x52494646u && be(b, 8, 4) == 0x57454250u) {  // RIFF....WEBP
    // VP8 / VP8L frames are at most 16384 x 16384; only the extended header (VP8X) declares more.
    if (n >= 30 && be(b, 12, 4) == 0x56503858u) return (uint64_t(le(b, 24, 3)) + 1) * (uint64_t(le(b, 27, 3)) + 1);
    return 0;
  }
  fail("cannot decode image '", name, "': not a JPEG, PNG, BMP, WebP or binary PPM file");
}
#endif
}  // namespace

ImageU8 decode_image(const std::vector<uint8_t>& bytes, const std::string& name) {
  if (bytes.size() >= 2 && bytes[0] == 'P' && bytes[1] == '6') return decode_ppm(bytes, name);
#ifdef INSTINCT_WITH_IMGCODECS
  INSTINCT_CHECK(!bytes.empty(), "cannot decode image '", name, "': file is empty");
  const uint64_t pixels = declared_pixels(bytes, name);
  INSTINCT_CHECK(pixels <= uint64_t(kMaxPixels), "cannot decode image '", name, "': its header declares ", pixels,
                 " pixels, more than the 2^28 (16384 x 16384) this loader accepts");
  cv::Mat bgr;
  try {
    const cv::Mat buf(1, static_cast<int>(bytes.size()), CV_8U, const_cast<uint8_t*>(bytes.data()));
    bgr = cv::imdecode(buf, cv::IMREAD_COLOR | cv::IMREAD_IGNORE_ORIENTATION);
  } catch (const cv::Exception& e) {
    fail("cannot decode image '", name, "': ", e.what());
  }
  INSTINCT_CHECK(!bgr.empty() && bgr.type() == CV_8UC3, "cannot decode image '", name,
                 "': not a readable JPEG/PNG/BMP/WebP");
  ImageU8 img;
  img.height = bgr.rows;
  img.width = bgr.cols;
  img.rgb.resize(static_cast<size_t>(img.height) * img.width * 3);
  cv::Mat rgb(img.height, img.width, CV_8UC3, img.rgb.data());
  cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
  return img;
#else
  fail("cannot decode image '", name, "': not a binary PPM, and this build has no other decoders (INSTINCT_WITH_IMGCODECS=OFF)");
#endif
}

ImageU8 load_image(const std::string& path) { return decode_image(read_file(path), path); }

AxisWeights compute_aa_weights(int in_size, int out_size) {
  INSTINCT_ASSERT(in_size > 0 && out_size > 0);
  AxisWeights aw;
  aw.in_size = in_size;
  aw.out_size = out_size;
  const double scale = static_cast<double>(in_size) / out_size;
  const double support = scale >= 1.0 ? scale : 1.0;  // bilinear: interp_size/2 = 1
  const double invscale = scale >= 1.0 ? 1.0 / scale : 1.0;
  aw.max_taps = static_cast<int>(std::ceil(support)) * 2 + 1;
  aw.start.resize(out_size);
  aw.count.resize(out_size);
  aw.weights.assign(static_cast<size_t>(out_size) * aw.max_taps, 0.f);
  std::vector<double> w(aw.max_taps);
  for (int i = 0; i < out_size; ++i) {
    const double center = scale * (i + 0.5);
    // static_cast truncates toward zero exactly like torch's int64_t cast.
    const int xmin = std::max(static_cast<int>(center - support + 0.5), 0);
    const int xsize = std::min(static_cast<int>(center + support + 0.5), in_size) - xmin;
    INSTINCT_ASSERT(xsize > 0 && xsize <= aw.max_taps);
    double total = 0;
    for (int j = 0; j < xsize; ++j) {
      const double x = std::abs((j + xmin - center + 0.5) * invscale);
      w[j] = x < 1.0 ? 1.0 - x : 0.0;
      total += w[j];
    }
    aw.start[i] = xmin;
    aw.count[i] = xsize;
    for (int j = 0; j < xsize; ++j)
      aw.weights[static_cast<size_t>(i) * aw.max_taps + j] =
          static_cast<float>(total != 0 ? w[j] / total : 0.0);
  }
  return aw;
}

std::pair<int, int> resized_size(int height, int width, const PreprocessConfig& cfg) {
  const int s = cfg.image_size;
  if (cfg.resize == "squash") return {s, s};
  const double f = static_cast<double>(s) / std::max(height, width);
  const int h = std::clamp(static_cast<int>(std::floor(height * f + 0.5)), 1, s);
  const int w = std::clamp(static_cast<int>(std::floor(width * f + 0.5)), 1, s);
  return {h, w};
}

void preprocess_into(const ImageU8& img, const PreprocessConfig& cfg, float* dst, uint8_t* valid,
                     bool hflip) {
  INSTINCT_ASSERT(img.height > 0 && img.width > 0 &&
                  img.rgb.size() == static_cast<size_t>(img.height) * img.width * 3);
  const int S = cfg.image_size;
  const auto [oh, ow] = resized_size(img.height, img.width, cfg);
  const AxisWeights wx = compute_aa_weights(img.width, ow);
  const AxisWeights wy = compute_aa_weights(img.height, oh);

  // Horizontal pass: (H_in, W_in, 3) uint8 -> (H_in, ow, 3) float, in 0..255 units.
  thread_local std::vector<float> tmp, row;
  tmp.resize(static_cast<size_t>(img.height) * ow * 3);
  row.resize(static_cast<size_t>(ow) * 3);
  for (int y = 0; y < img.height; ++y) {
    const uint8_t* src = img.rgb.data() + static_cast<size_t>(y) * img.width * 3;
    float* out = tmp.data() + static_cast<size_t>(y) * ow * 3;
    for (int x = 0; x < ow; ++x) {
      const float* w = wx.weights.data() + static_cast<size_t>(x) * wx.max_taps;
      const uint8_t* p = src + static_cast<size_t>(wx.start[x]) * 3;
      float r = 0, g = 0, b = 0;
      for (int k = 0, n = wx.count[x]; k < n; ++k, p += 3) {
        r += w[k] * p[0];
        g += w[k] * p[1];
        b += w[k] * p[2];
      }
      out[3 * x] = r;
      out[3 * x + 1] = g;
      out[3 * x + 2] = b;
    }
  }

  // Vertical pass into a row buffer, then round / normalise / de-interleave into the CHW planes.
  const size_t plane = static_cast<size_t>(S) * S;
  float scale[3], shift[3];
  for (int c = 0; c < 3; ++c) {
    scale[c] = 1.f / (255.f * cfg.std[c]);
    shift[c] = -cfg.mean[c] / cfg.std[c];
  }
  const int n3 = ow * 3;
  for (int y = 0; y < oh; ++y) {
    const float* w = wy.weights.data() + static_cast<size_t>(y) * wy.max_taps;
    const float* src = tmp.data() + static_cast<size_t>(wy.start[y]) * n3;
    std::fill(row.begin(), row.end(), 0.f);
    float* rp = row.data();
    for (int k = 0, n = wy.count[y]; k < n; ++k, src += n3) {
      const float wk = w[k];
      for (int i = 0; i < n3; ++i) rp[i] += wk * src[i];
    }
    if (cfg.round_uint8) {
      // Round half to even (torch.round) without a libm call: adding 1.5*2^23 leaves no fraction
      // bits, so the FPU's default round-to-nearest-even does the rounding (exact for |v| < 2^22).
      constexpr float kMagic = 12582912.f;
      for (int i = 0; i < n3; ++i) {
        const float r = (rp[i] + kMagic) - kMagic;
        rp[i] = std::min(std::max(r, 0.f), 255.f);
      }
    }
    for (int c = 0; c < 3; ++c) {
      float* out = dst + c * plane + static_cast<size_t>(y) * S;
      const float a = scale[c], b = shift[c];
      if (hflip)
        for (int x = 0; x < ow; ++x) out[ow - 1 - x] = rp[3 * x + c] * a + b;
      else
        for (int x = 0; x < ow; ++x) out[x] = rp[3 * x + c] * a + b;
      std::fill(out + ow, out + S, 0.f);
    }
  }
  for (int c = 0; c < 3; ++c)
    std::fill(dst + c * plane + static_cast<size_t>(oh) * S, dst + (c + 1) * plane, 0.f);
  if (valid) {
    for (int y = 0; y < S; ++y) {
      uint8_t* v = valid + static_cast<size_t>(y) * S;
      const bool in = y < oh;
      std::fill(v, v + (in ? ow : 0), uint8_t{1});
      std::fill(v + (in ? ow : 0), v + S, uint8_t{0});
    }
  }
}

}  // namespace instinct::data
