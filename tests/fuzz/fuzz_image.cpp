// data::decode_image on damaged JPEG / PNG / BMP / WebP / PPM bytes, then the SAM3 preprocessing of
// what decodes.
#include "fuzz_common.h"
#include "instinct/data/image_ops.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::vector<uint8_t> bytes(data, data + size);
  fuzz::guarded([&] {
    const auto img = instinct::data::decode_image(bytes, "fuzz.img");
    if (img.height <= 0 || img.width <= 0 || img.rgb.size() != size_t(img.height) * img.width * 3) std::abort();
    if (int64_t(img.height) * img.width > (1 << 22)) return;
    instinct::data::PreprocessConfig cfg;
    cfg.image_size = 24;
    std::vector<float> out(3 * 24 * 24);
    std::vector<uint8_t> valid(24 * 24);
    for (const char* mode : {"squash", "longest_pad"}) {
      cfg.resize = mode;
      instinct::data::preprocess_into(img, cfg, out.data(), valid.data(), mode[0] == 'l');
    }
  });
  return 0;
}
