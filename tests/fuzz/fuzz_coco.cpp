// eval::CocoDataset::load on a COCO instances file (polygon / box / RLE / compressed-counts
// segmentations), then what instinct-eval does with it: targets, centroid and interior points, and
// the RLE operations on every annotation (compressed string round trip, bbox, IoU, merge).
#include "fuzz_common.h"
#include "instinct/eval/coco.h"

using namespace instinct::eval;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fuzz::write_file("instances.json", data, size);
  fuzz::guarded([&] {
    CocoDataset ds = CocoDataset::load(path);
    ProtocolConfig cfg;
    cfg.n_images = 0;
    cfg.targets = "all";
    for (const auto& img : ds.images()) {
      // Decoding (interior point) is O(h*w): keep it to images the fuzzer can afford.
      const bool small = int64_t(img.height) * img.width <= (1 << 20);
      cfg.point = small ? "interior" : "centroid";
      (void)select_targets(ds, img, cfg);
      std::vector<Rle> masks;
      for (size_t k : img.annotations) {
        const Rle& r = ds.annotations()[k].rle;
        (void)rle_area(r);
        (void)rle_to_bbox(r);
        const Rle back = rle_from_string(rle_to_string(r), r.h, r.w);
        if (back != r) {
          std::fprintf(stderr, "FUZZ FINDING: compressed RLE round trip differs\n");
          std::abort();
        }
        if (small) (void)rle_decode(r);
        (void)rle_iou(r, r, ds.annotations()[k].iscrowd);
        masks.push_back(r);
      }
      (void)rle_merge(masks, false);
      (void)rle_merge(masks, true);
    }
    for (int id : ds.category_ids()) (void)ds.category_name(id);
  });
  return 0;
}
