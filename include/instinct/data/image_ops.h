#pragma once
// Image decoding and the SAM3 preprocessing (resize + normalise) written straight into a caller's
// float CHW buffer. Torch-free on purpose: the loader hands in a slice of its batch tensor.
//
// The resampler reproduces PIL's / torch's antialiased bilinear filter
// (`F.interpolate(x, size, mode="bilinear", antialias=True, align_corners=False)`): a triangle
// filter whose support is widened by the downscale factor, evaluated separably (horizontal pass,
// then vertical pass) with per-axis weights normalised to sum to one. Parity with torch is tested
// in tests/unit/test_data.cpp against fixtures from tests/python/fixtures_data.py: max abs error
// < 1e-6 (in [0,1] units) vs torch on float input; with round_uint8 the result equals torchvision's
// `resize(uint8 tensor, antialias=True)` except for <= 0.2% of values one level (1/255) apart, where
// the float sum lands on a .5 tie and summation order decides the rounding.
#include <array>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace instinct::data {

/// How images become model inputs. Defaults are SAM3's deployment preprocessing.
struct PreprocessConfig {
  /// Output side S: images become (3,S,S).
  int image_size = 1008;
  /// "squash": resize to SxS ignoring aspect (SAM3 default); "longest_pad": longest side to S,
  /// other side round(side*S/longest) (half up), zero padding (in normalised space) bottom/right.
  std::string resize = "squash";
  /// Per-channel (RGB) mean subtracted after scaling to [0,1].
  std::array<float, 3> mean{0.5f, 0.5f, 0.5f};
  /// Per-channel (RGB) std divided by after subtracting the mean.
  std::array<float, 3> std{0.5f, 0.5f, 0.5f};
  /// Round the resized image to uint8 before normalising, like torchvision Resize on uint8
  /// tensors (round half to even, as torch.round); false keeps the exact float resample.
  bool round_uint8 = true;
};

/// Throws instinct::Error unless `cfg` is usable (size > 0, known resize mode, std != 0).
void validate(const PreprocessConfig& cfg);

/// A decoded 8-bit RGB image, HWC interleaved, rows tightly packed (stride = 3*width).
struct ImageU8 {
  int height = 0;
  int width = 0;
  std::vector<uint8_t> rgb;
};

/// Reads a whole file; throws instinct::Error naming `path` when it cannot be opened or read.
std::vector<uint8_t> read_file(const std::string& path);

/// Decodes JPEG/PNG/BMP/WebP bytes like PIL's `Image.open(...).convert("RGB")`: no EXIF rotation,
/// grayscale replicated to RGB, alpha dropped, 16-bit reduced to 8-bit. Binary PPM (P6, maxval 255,
/// what PIL writes) is decoded without OpenCV, so it is the one input format of builds with
/// INSTINCT_WITH_IMGCODECS=OFF. Throws instinct::Error naming `name` (used only for the message)
/// when the bytes do not decode, are in another format (TIFF, EXR, JPEG 2000, PGM, ... are refused
/// before OpenCV sees them), or declare more than 2^28 pixels in their header (checked before any
/// pixel memory is allocated).
ImageU8 decode_image(const std::vector<uint8_t>& bytes, const std::string& name);

/// read_file + decode_image.
ImageU8 load_image(const std::string& path);

/// Per-output-pixel filter taps along one axis: output i reads inputs [start[i], start[i]+count[i])
/// with weights weights[i*max_taps + k] (normalised to sum 1; unused entries are 0).
struct AxisWeights {
  int in_size = 0;
  int out_size = 0;
  int max_taps = 0;
  std::vector<int> start;
  std::vector<int> count;
  std::vector<float> weights;
};

/// Antialiased bilinear (triangle) weights for resizing `in_size` samples to `out_size`, identical
/// to torch's `_compute_indices_weights_aa` / PIL's `precompute_coeffs` (align_corners=False).
AxisWeights compute_aa_weights(int in_size, int out_size);

/// Size (height, width) the image content is resized to before any padding.
std::pair<int, int> resized_size(int height, int width, const PreprocessConfig& cfg);

/// Resizes `img` per `cfg` and writes normalised float32 planes into `dst` (3*S*S floats, CHW,
/// contiguous). For "longest_pad" the area outside the content is set to 0 and, when `valid` is
/// non-null, valid[y*S+x] (S*S bytes) is set to 1 inside the content and 0 in the padding.
/// `hflip` mirrors the content horizontally (padding stays bottom/right).
void preprocess_into(const ImageU8& img, const PreprocessConfig& cfg, float* dst, uint8_t* valid,
                     bool hflip = false);

}  // namespace instinct::data
