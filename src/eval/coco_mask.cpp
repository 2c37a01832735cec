// COCO RLE masks with pycocotools maskApi semantics (see include/instinct/eval/coco_mask.h).
#include "instinct/eval/coco_mask.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include <nlohmann/json.hpp>

#include "instinct/common/error.h"

namespace instinct::eval {

namespace {

void check_size(const char* fn, int h, int w) {
  INSTINCT_CHECK(h >= 0 && w >= 0 && static_cast<int64_t>(h) * w <= INT32_MAX, fn, ": mask size ", h,
                 "x", w, " is invalid (expected h, w >= 0 and h*w < 2^31)");
}

uint64_t counts_sum(const Rle& r) {
  uint64_t s = 0;
  for (uint32_t c : r.counts) s += c;
  return s;
}

// Merge and IoU walk runs until both are exhausted; unequal sums would make pycocotools loop forever.
void check_sum(const char* fn, const Rle& r) {
  check_size(fn, r.h, r.w);
  const uint64_t s = counts_sum(r);
  INSTINCT_CHECK(s == static_cast<uint64_t>(r.h) * r.w, fn, ": RLE counts sum to ", s, ", expected h*w = ",
                 r.h, "*", r.w, " = ", static_cast<uint64_t>(r.h) * r.w);
}

}  // namespace

Rle rle_encode(const uint8_t* mask, int h, int w, bool column_major_input) {
  check_size("rle_encode", h, w);
  Rle r{h, w, {}};
  uint8_t prev = 0;
  uint32_t run = 0;
  auto push = [&](bool v) {
    if (v != prev) {
      r.counts.push_back(run);
      run = 0;
      prev = v;
    }
    ++run;
  };
  const size_t n = static_cast<size_t>(h) * w;
  if (column_major_input) {
    for (size_t i = 0; i < n; ++i) push(mask[i] != 0);
  } else {
    for (int x = 0; x < w; ++x)
      for (int y = 0; y < h; ++y) push(mask[static_cast<size_t>(y) * w + x] != 0);
  }
  r.counts.push_back(run);
  return r;
}

void rle_decode(const Rle& rle, uint8_t* out) {
  check_sum("rle_decode", rle);
  const int h = rle.h, w = rle.w;
  if (static_cast<int64_t>(h) * w == 0) return;
  std::memset(out, 0, static_cast<size_t>(h) * w);
  int x = 0, y = 0;
  for (size_t j = 0; j < rle.counts.size(); ++j) {
    uint32_t c = rle.counts[j];
    if (j % 2 == 0) {  // skip a 0-run without touching pixels
      const uint64_t idx = static_cast<uint64_t>(x) * h + y + c;
      if (h > 0) x = static_cast<int>(idx / h), y = static_cast<int>(idx % h);
      continue;
    }
    for (; c > 0; --c) {
      out[static_cast<size_t>(y) * w + x] = 1;
      if (++y == h) y = 0, ++x;
    }
  }
}

std::vector<uint8_t> rle_decode(const Rle& rle) {
  check_size("rle_decode", rle.h, rle.w);
  std::vector<uint8_t> m(static_cast<size_t>(rle.h) * rle.w);
  rle_decode(rle, m.data());
  return m;
}

std::string rle_to_string(const Rle& rle) {
  std::string s;
  s.reserve(rle.counts.size() * 2);
  for (size_t i = 0; i < rle.counts.size(); ++i) {
    int64_t x = rle.counts[i];
    if (i > 2) x -= rle.counts[i - 2];
    for (bool more = true; more;) {
      int c = static_cast<int>(x & 0x1f);
      x >>= 5;  // arithmetic shift: negative deltas end at -1
      more = (c & 0x10) ? x != -1 : x != 0;
      if (more) c |= 0x20;
      s.push_back(static_cast<char>(c + 48));
    }
  }
  return s;
}

Rle rle_from_string(const std::string& s, int h, int w) {
  check_size("rle_from_string", h, w);
  Rle r{h, w, {}};
  size_t p = 0;
  while (p < s.size()) {
    const size_t start = p;
    int64_t x = 0;
    int k = 0;
    for (bool more = true; more;) {
      INSTINCT_CHECK(p < s.size(), "compressed RLE: string ends inside the value starting at offset ", start,
                     " (its last character '", s[p - 1], "' has the continuation bit 0x20 set)");
      const int c = static_cast<unsigned char>(s[p]) - 48;
      INSTINCT_CHECK(c >= 0 && c < 64, "compressed RLE: invalid character '", s[p], "' (code ",
                     static_cast<int>(static_cast<unsigned char>(s[p])), ") at offset ", p,
                     " (expected '0'..'o', codes 48..111)");
      INSTINCT_CHECK(k < 8, "compressed RLE: value starting at offset ", start, " is longer than 8 characters");
      x |= static_cast<int64_t>(c & 0x1f) << (5 * k);
      more = c & 0x20;
      ++p;
      ++k;
      if (!more && (c & 0x10)) x |= static_cast<int64_t>(-1) * (int64_t{1} << (5 * k));  // sign-extend
    }
    if (r.counts.size() > 2) x += r.counts[r.counts.size() - 2];
    INSTINCT_CHECK(x >= 0 && x <= UINT32_MAX, "compressed RLE: count ", r.counts.size(), " (offset ", start,
                   ") decodes to ", x, " (expected 0..2^32-1)");
    r.counts.push_back(static_cast<uint32_t>(x));
  }
  const uint64_t sum = counts_sum(r);
  INSTINCT_CHECK(sum == static_cast<uint64_t>(h) * w, "compressed RLE: counts sum to ", sum, ", expected h*w = ",
                 h, "*", w, " = ", static_cast<uint64_t>(h) * w);
  return r;
}

Rle rle_empty(int h, int w) { return Rle{h, w, {uint32_t(h) * uint32_t(w)}}; }

uint64_t rle_area(const Rle& rle) {
  uint64_t a = 0;
  for (size_t j = 1; j < rle.counts.size(); j += 2) a += rle.counts[j];
  return a;
}

std::array<double, 4> rle_to_bbox(const Rle& rle) {
  // uint32 arithmetic on purpose: identical to maskApi even for non-canonical counts.
  const uint32_t h = static_cast<uint32_t>(rle.h), w = static_cast<uint32_t>(rle.w);
  const size_t m = rle.counts.size() / 2 * 2;
  if (m == 0 || h == 0 || w == 0) return {0, 0, 0, 0};
  uint32_t xs = w, ys = h, xe = 0, ye = 0, cc = 0, xp = 0;
  for (size_t j = 0; j < m; ++j) {
    cc += rle.counts[j];
    const uint32_t t = cc - static_cast<uint32_t>(j % 2);
    const uint32_t y = t % h, x = (t - y) / h;
    if (j % 2 == 0)
      xp = x;
    else if (xp < x)
      ys = 0, ye = h - 1;  // the run wraps a column: full height
    xs = std::min(xs, x);
    xe = std::max(xe, x);
    ys = std::min(ys, y);
    ye = std::max(ye, y);
  }
  return {double(xs), double(ys), double(xe - xs + 1), double(ye - ys + 1)};  // uint32 too: may wrap to 0
}

// No FMA contraction: ys + s*t must round exactly like pycocotools' (non-fused) build.
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("fp-contract=off")))
#endif
Rle rle_from_polygon(const std::vector<double>& xy, int h, int w) {
  check_size("rle_from_polygon", h, w);
  INSTINCT_CHECK(!xy.empty() && xy.size() % 2 == 0, "polygon: ", xy.size(),
                 " coordinates (expected a non-empty even number: x1, y1, x2, y2, ...)");
  for (size_t i = 0; i < xy.size(); ++i)
    INSTINCT_CHECK(std::isfinite(xy[i]) && std::fabs(xy[i]) < double(1 << 27), "polygon: coordinate ", i, " = ",
                   xy[i], " is not finite or |value| >= 2^27");
  if (static_cast<int64_t>(h) * w == 0) return Rle{h, w, {0}};
  const double scale = 5;
  const size_t k = xy.size() / 2;
  std::vector<int> x(k + 1), y(k + 1);
  for (size_t j = 0; j < k; ++j) x[j] = static_cast<int>(scale * xy[2 * j] + .5);  // truncation, as C
  for (size_t j = 0; j < k; ++j) y[j] = static_cast<int>(scale * xy[2 * j + 1] + .5);
  x[k] = x[0];
  y[k] = y[0];

  // Walk the boundary point by point; a change of u between consecutive points that crosses a pixel
  // centre column gives a toggle at that column (streamed: no dense point arrays).
  std::vector<uint32_t> a;
  bool have_prev = false;
  int pu = 0, pv = 0;
  auto visit = [&](int u, int v) {
    if (have_prev && u != pu) {
      double xd = u < pu ? u : u - 1;
      xd = (xd + .5) / scale - .5;
      if (std::floor(xd) == xd && xd >= 0 && xd <= w - 1) {
        double yd = v < pv ? v : pv;
        yd = (yd + .5) / scale - .5;
        if (yd < 0)
          yd = 0;
        else if (yd > h)
          yd = h;
        yd = std::ceil(yd);
        a.push_back(static_cast<uint32_t>(static_cast<int>(xd) * h + static_cast<int>(yd)));
      }
    }
    pu = u, pv = v, have_prev = true;
  };
  for (size_t j = 0; j < k; ++j) {
    int xs = x[j], xe = x[j + 1], ys = y[j], ye = y[j + 1];
    const int dx = std::abs(xe - xs), dy = std::abs(ys - ye);
    if (dx == 0 && dy == 0) {  // repeated vertex: pycocotools computes 0/0 here, but u never changes
      visit(xs, ys);
      continue;
    }
    const bool flip = (dx >= dy && xs > xe) || (dx < dy && ys > ye);
    if (flip) std::swap(xs, xe), std::swap(ys, ye);
    if (dx >= dy) {
      const double s = static_cast<double>(ye - ys) / dx;
      for (int d = 0; d <= dx; ++d) {
        const int t = flip ? dx - d : d;
        const double st = s * t;
        visit(t + xs, static_cast<int>(ys + st + .5));
      }
    } else {
      const double s = static_cast<double>(xe - xs) / dy;
      for (int d = 0; d <= dy; ++d) {
        const int t = flip ? dy - d : d;
        const double st = s * t;
        visit(static_cast<int>(xs + st + .5), t + ys);
      }
    }
  }

  // Sorted toggles -> runs; equal toggles cancel (a zero delta merges its neighbours).
  a.push_back(static_cast<uint32_t>(h) * static_cast<uint32_t>(w));
  std::sort(a.begin(), a.end());
  uint32_t p = 0;
  for (uint32_t& v : a) {
    const uint32_t t = v;
    v -= p;
    p = t;
  }
  Rle r{h, w, {}};
  r.counts.reserve(a.size());
  size_t j = 0;
  r.counts.push_back(a[j++]);
  while (j < a.size()) {
    if (a[j] > 0) {
      r.counts.push_back(a[j++]);
    } else {
      ++j;
      if (j < a.size()) r.counts.back() += a[j++];
    }
  }
  return r;
}

Rle rle_from_bbox(double x, double y, double bw, double bh, int h, int w) {
  const double xe = x + bw, ye = y + bh;
  return rle_from_polygon({x, y, x, ye, xe, ye, xe, y}, h, w);
}

Rle rle_merge(const std::vector<Rle>& rles, bool intersect) {
  if (rles.empty()) return Rle{};
  if (rles.size() == 1) return rles[0];
  const int h = rles[0].h, w = rles[0].w;
  for (size_t i = 0; i < rles.size(); ++i) {
    INSTINCT_CHECK(rles[i].h == h && rles[i].w == w, "rle_merge: RLE ", i, " is ", rles[i].h, "x", rles[i].w,
                   ", expected ", h, "x", w, " like RLE 0");
    check_sum("rle_merge", rles[i]);
    INSTINCT_CHECK(!rles[i].counts.empty(), "rle_merge: RLE ", i, " has no counts");
  }
  std::vector<uint32_t> acc = rles[0].counts, out;
  for (size_t i = 1; i < rles.size(); ++i) {
    const std::vector<uint32_t>& A = acc;
    const std::vector<uint32_t>& B = rles[i].counts;
    out.clear();
    out.reserve(A.size() + B.size());
    uint32_t ca = A[0], cb = B[0], cc = 0;
    bool v = false, va = false, vb = false;
    size_t ia = 1, ib = 1;
    for (uint32_t ct = 1; ct > 0;) {
      const uint32_t c = std::min(ca, cb);
      cc += c;
      ct = 0;
      ca -= c;
      if (!ca && ia < A.size()) ca = A[ia++], va = !va;
      ct += ca;
      cb -= c;
      if (!cb && ib < B.size()) cb = B[ib++], vb = !vb;
      ct += cb;
      const bool vp = v;
      v = intersect ? (va && vb) : (va || vb);
      if (v != vp || ct == 0) out.push_back(cc), cc = 0;
    }
    acc.swap(out);
  }
  return Rle{h, w, std::move(acc)};
}

double rle_iou(const Rle& dt, const Rle& gt, bool gt_crowd) {
  INSTINCT_CHECK(dt.h == gt.h && dt.w == gt.w, "rle_iou: detection is ", dt.h, "x", dt.w, " but ground truth is ",
                 gt.h, "x", gt.w);
  check_sum("rle_iou", dt);
  check_sum("rle_iou", gt);
  // Box pre-check (bbIou): disjoint boxes -> 0 without walking the runs.
  const auto D = rle_to_bbox(dt), G = rle_to_bbox(gt);
  const double bw = std::fmin(D[2] + D[0], G[2] + G[0]) - std::fmax(D[0], G[0]);
  if (bw <= 0) return 0;
  const double bh = std::fmin(D[3] + D[1], G[3] + G[1]) - std::fmax(D[1], G[1]);
  if (bh <= 0) return 0;
  uint32_t ca = dt.counts[0], cb = gt.counts[0];
  bool va = false, vb = false;
  size_t a = 1, b = 1;
  uint64_t inter = 0, uni = 0;
  for (uint64_t ct = 1; ct > 0;) {
    const uint32_t c = std::min(ca, cb);
    if (va || vb) {
      uni += c;
      if (va && vb) inter += c;
    }
    ct = 0;
    ca -= c;
    if (!ca && a < dt.counts.size()) ca = dt.counts[a++], va = !va;
    ct += ca;
    cb -= c;
    if (!cb && b < gt.counts.size()) cb = gt.counts[b++], vb = !vb;
    ct += cb;
  }
  if (inter == 0) return 0;
  if (gt_crowd) uni = rle_area(dt);
  return static_cast<double>(inter) / static_cast<double>(uni);
}

namespace {

std::vector<double> json_numbers(const nlohmann::json& p, size_t index) {
  INSTINCT_CHECK(p.is_array(), "segmentation: polygon ", index, " is ", p.type_name(),
                 " (expected a list of numbers x1, y1, x2, y2, ...)");
  std::vector<double> v;
  v.reserve(p.size());
  for (size_t i = 0; i < p.size(); ++i) {
    INSTINCT_CHECK(p[i].is_number(), "segmentation: polygon ", index, " item ", i, " is ", p[i].type_name(),
                   " (expected a number)");
    v.push_back(p[i].get<double>());
  }
  return v;
}

}  // namespace

Rle segmentation_to_rle(const nlohmann::json& seg, int h, int w) {
  check_size("segmentation_to_rle", h, w);
  if (seg.is_array()) {
    INSTINCT_CHECK(!seg.empty(), "segmentation: empty polygon list (expected at least one polygon)");
    std::vector<Rle> parts;
    parts.reserve(seg.size());
    // pycocotools' frPyObjects decides on the first polygon: exactly 4 numbers means a list of boxes.
    const bool boxes = seg[0].is_array() && seg[0].size() == 4;
    for (size_t i = 0; i < seg.size(); ++i) {
      const std::vector<double> p = json_numbers(seg[i], i);
      if (boxes) {
        INSTINCT_CHECK(p.size() == 4, "segmentation: polygon 0 has 4 numbers, so pycocotools reads the list as ",
                       "boxes [x, y, w, h], but polygon ", i, " has ", p.size());
        parts.push_back(rle_from_bbox(p[0], p[1], p[2], p[3], h, w));
      } else {
        INSTINCT_CHECK(p.size() % 2 == 0 && p.size() >= 6, "segmentation: polygon ", i, " has ", p.size(),
                       " numbers (expected an even number >= 6: x1, y1, x2, y2, x3, y3, ...)");
        parts.push_back(rle_from_polygon(p, h, w));
      }
    }
    return rle_merge(parts, false);
  }
  INSTINCT_CHECK(seg.is_object() && seg.contains("size") && seg.contains("counts"), "segmentation: got ",
                 seg.is_object() ? "an object without \"size\" and \"counts\"" : seg.type_name(),
                 " (expected a polygon list or an RLE {\"size\": [h, w], \"counts\": ...})");
  const auto& size = seg["size"];
  INSTINCT_CHECK(size.is_array() && size.size() == 2 && size[0].is_number_integer() && size[1].is_number_integer(),
                 "segmentation: RLE \"size\" is ", size.is_primitive() || (size.size() <= 2 && std::all_of(size.begin(), size.end(), [](const auto& x) { return x.is_primitive(); }))
                     ? size.dump() : size.type_name(),
                 " (expected [h, w])");
  INSTINCT_CHECK(size[0].get<int64_t>() == h && size[1].get<int64_t>() == w, "segmentation: RLE \"size\" is ",
                 size.dump(), " but the image is h=", h, ", w=", w);
  const auto& counts = seg["counts"];
  if (counts.is_string()) return rle_from_string(counts.get<std::string>(), h, w);
  INSTINCT_CHECK(counts.is_array(), "segmentation: RLE \"counts\" is ", counts.type_name(),
                 " (expected a list of run lengths or a compressed string)");
  Rle r{h, w, {}};
  r.counts.reserve(counts.size());
  for (size_t i = 0; i < counts.size(); ++i) {
    const auto& c = counts[i];
    INSTINCT_CHECK(c.is_number_integer() && c.get<int64_t>() >= 0 && c.get<int64_t>() <= UINT32_MAX,
                   "segmentation: RLE counts[", i, "] = ", c.is_primitive() ? c.dump() : c.type_name(),
                   " (expected an integer 0..2^32-1)");
    r.counts.push_back(static_cast<uint32_t>(c.get<int64_t>()));
  }
  const uint64_t sum = counts_sum(r);
  INSTINCT_CHECK(sum == static_cast<uint64_t>(h) * w, "segmentation: RLE counts sum to ", sum,
                 ", expected h*w = ", h, "*", w, " = ", static_cast<uint64_t>(h) * w);
  return r;
}

}  // namespace instinct::eval
