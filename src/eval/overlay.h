#pragma once
// Overlay images for eyeballing an evaluation: one PNG per image, a grid of panels (one row per model,
// one column per prompt mode), each the original image with the ground-truth outline (green), the
// predicted mask (red, translucent), the box prompt (yellow) or point prompt (cyan) and a caption.
// Needs OpenCV imgcodecs (INSTINCT_WITH_IMGCODECS); torch-free.
#include <array>
#include <string>
#include <vector>

#include "instinct/eval/coco_mask.h"

namespace instinct::eval {

struct OverlayPanel {
  std::string caption;             ///< e.g. "teacher | box | IoU 0.91"
  Rle pred;                        ///< predicted mask at the image's size
  Rle gt;                          ///< target mask at the image's size
  bool has_box = false;
  std::array<double, 4> box{};     ///< box prompt x0, y0, x1, y1 (original pixels)
  bool has_point = false;
  std::array<double, 2> point{};   ///< point prompt (x, y)
};

/// True when overlays can be written (built with imgcodecs).
bool overlays_supported();

/// Writes `png_path` atomically: panels laid out row-major, `columns` per row, each scaled so its
/// longer side is at most `panel_size` pixels. `image_path` is the original image (a grey canvas is
/// used when it cannot be read). Throws instinct::Error when the PNG cannot be written.
void write_overlay(const std::string& png_path, const std::string& image_path, int height, int width,
                   const std::vector<OverlayPanel>& panels, int columns, int panel_size = 320);

}  // namespace instinct::eval
