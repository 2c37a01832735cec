#pragma once
// Small tensor helpers shared across modules.
#include <ATen/Tensor.h>

#include <cstdint>
#include <string>

namespace instinct {

/// Bilinear resize of (N,C,H,W) to (N,C,h,w) with align_corners=false (torch's F.interpolate);
/// returns `x` itself when it already has that size.
at::Tensor resize_bilinear(const at::Tensor& x, int64_t h, int64_t w);

/// A shape for messages: "[1, 3, 224, 224]".
std::string shape_str(at::IntArrayRef shape);

}  // namespace instinct
