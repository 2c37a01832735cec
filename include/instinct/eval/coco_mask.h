#pragma once
// COCO mask run-length encoding (RLE), torch-free, reproducing the semantics of pycocotools'
// maskApi (encode / decode / compressed string codec / area / toBbox / frPoly / frBbox / merge /
// iou) bit for bit, written from the format description in docs (../shared/reference/
// evaluation.md, "COCO annotation format"). References: scripts/coco_rle.py (numpy) and the real
// pycocotools (tests/python/fixtures_pycocotools.py, thousands of cases).
//
// Where this library deliberately differs from pycocotools, it is on malformed input only:
// pycocotools returns garbage, -1 or reads out of bounds; we throw instinct::Error with a one-line
// message. Every such case is listed on the function below ("pycocotools:").
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace instinct::eval {

/// A binary h x w mask as runs in column-major (Fortran) order: counts[0] zeros, counts[1] ones,
/// counts[2] zeros, ... The first run is a 0-run, possibly 0 long; canonical RLEs (those made by
/// rle_encode / rle_from_polygon / rle_merge) have no other zero-length run and sum to h*w.
/// RLEs read from files (uncompressed or compressed) keep their counts verbatim.
struct Rle {
  int h = 0;
  int w = 0;
  std::vector<uint32_t> counts;
  bool operator==(const Rle& o) const { return h == o.h && w == o.w && counts == o.counts; }
  bool operator!=(const Rle& o) const { return !(*this == o); }
};

/// Encodes an h x w mask; any non-zero byte is "on". `mask` is row-major (mask[y*w + x]) unless
/// column_major_input (mask[x*h + y], i.e. numpy order='F' as pycocotools takes it). O(h*w).
/// Output is canonical (a 0x0 mask gives counts {0}, like pycocotools).
/// pycocotools: compares raw byte values, so a mask holding both 1 and 2 is mis-encoded there.
Rle rle_encode(const uint8_t* mask, int h, int w, bool column_major_input = false);

/// Decodes into `out_row_major` (h*w bytes, 0/1, out[y*w + x]).
/// Throws instinct::Error when the counts do not sum to h*w (pycocotools does not check: it writes
/// past the buffer or leaves pixels unwritten).
void rle_decode(const Rle& rle, uint8_t* out_row_major);

/// Convenience: rle_decode into a new row-major vector of h*w bytes.
std::vector<uint8_t> rle_decode(const Rle& rle);

/// The compressed COCO string of rle.counts: for count i, x = counts[i] - counts[i-2] when i > 2
/// (note: not i >= 2), else counts[i]; x is emitted as 5-bit groups, least significant first, each
/// as char(48 + group), with 0x20 set on every group but the last; the last group is the one after
/// which the remaining value is 0 (bit 0x10 clear) or -1 (bit 0x10 set, i.e. x was negative).
/// Example: counts {3, 2, 45} -> "32]1": 3 -> '3', 2 -> '2', 45 = 0b01'01101 -> groups 13 (with
/// 0x20: 48+45 = ']') then 1 ('1').
std::string rle_to_string(const Rle& rle);

/// Parses a compressed COCO string (inverse of rle_to_string) into an h x w RLE.
/// Throws instinct::Error naming the offending character and offset when a character is outside
/// '0'..'o' (48..111), when the string ends inside a value (last char has 0x20 set), when a value
/// overflows, when a decoded count is negative or above 2^32-1, or when the counts do not sum to
/// h*w. pycocotools: reads past the end / wraps to uint32 / does not check the sum; its 32-bit int
/// shifts make values needing 7 characters (|delta| >= 2^29: images over 2^29 pixels) unreliable
/// there, while this function decodes them correctly.
Rle rle_from_string(const std::string& s, int h, int w);

/// Number of "on" pixels: the sum of the odd-index counts. O(runs).
uint64_t rle_area(const Rle& rle);

/// The all-zero h x w mask (one 0-run).
Rle rle_empty(int h, int w);

/// Bounding box [x, y, w, h] of the "on" pixels in pixel units (a pixel (x, y) covers
/// [x, x+1) x [y, y+1)), exactly as pycocotools toBbox: walks the runs (no decoding); a trailing
/// 0-run is ignored; a 1-run that spans columns makes the box full height; {0,0,0,0} when there is
/// no 1-run. For canonical RLEs this is the tight box of the on pixels. Like pycocotools it computes
/// in uint32, so verbatim counts with zero-length runs can wrap: {0,0,0,5} in 1x5 gives width 0.
/// pycocotools: divides by zero when h = 0 (here: {0,0,0,0}).
std::array<double, 4> rle_to_bbox(const Rle& rle);

/// Rasterises one polygon [x1, y1, x2, y2, ...] (COCO pixel coordinates; implicitly closed) into an
/// h x w RLE exactly as pycocotools rleFrPoly: vertices are scaled x5 and rounded (C truncation of
/// 5*v + 0.5, so negative coordinates round toward zero); each edge is walked one 1/5-px step along
/// its major axis with the minor coordinate rounded (edges are always walked from the endpoint with
/// the smaller major coordinate so both directions rasterise alike); every crossing of a pixel
/// centre column x + 0.5 gives an on/off toggle at that column's row ceil(y_edge - 0.5) (clamped to
/// [0, h]); toggles are sorted in column-major order and paired with even-odd parity. The effect:
/// pixel (x, y) is on iff its centre lies inside the polygon traced at 1/5-px resolution.
/// Vertices may lie outside the image (clipped). Throws instinct::Error on an odd-length or empty
/// list, non-finite coordinates, or |coordinate| >= 2^27 (pycocotools overflows int there).
Rle rle_from_polygon(const std::vector<double>& xy, int h, int w);

/// Rasterises the box [x, y, bw, bh] (floats allowed) as pycocotools frBbox: the 4-vertex polygon
/// (x,y) (x,y+bh) (x+bw,y+bh) (x+bw,y) through rle_from_polygon. E.g. [0,0,W,H] gives the full
/// image, [1,1,3,2] pixels x in 1..3, y in 1..2.
Rle rle_from_bbox(double x, double y, double bw, double bh, int h, int w);

/// Union (intersect=false) or intersection of several RLEs, walking runs as pycocotools
/// rleMerge; one input is returned verbatim, none gives Rle{} (0x0, no counts).
/// Throws instinct::Error when the sizes differ (pycocotools returns an empty 0x0 RLE).
Rle rle_merge(const std::vector<Rle>& rles, bool intersect = false);

/// Mask IoU of a detection against a ground truth, walking runs as pycocotools rleIou (with its
/// bounding-box pre-check): |D & G| / |D | G|, or |D & G| / |D| when gt_crowd.
/// Zero intersection (including an empty union: both masks empty) gives 0, which is both our
/// protocol's rule and what pycocotools returns (it sets the denominator to 1 when |D & G| = 0).
/// Throws instinct::Error when the sizes differ (pycocotools returns -1).
double rle_iou(const Rle& dt, const Rle& gt, bool gt_crowd = false);

/// Converts a COCO annotation's "segmentation" value for an h x w image into an RLE, as pycocotools
/// COCO.annToRLE does:
///  - a list of polygons [[x1,y1,...], ...]: each rasterised, then merged (union). When the FIRST
///    polygon has exactly 4 numbers the whole list is read as boxes [x, y, w, h] (frBbox); all must
///    then have 4 numbers. pycocotools: frPyObjects routes such a list to frBbox, which takes only a
///    numpy array and raises TypeError on the list annToRLE hands it;
///  - an uncompressed RLE {"size": [h, w], "counts": [ints]} (iscrowd=1): counts kept verbatim;
///  - a compressed RLE {"size": [h, w], "counts": "string"}.
/// Throws instinct::Error with one line naming what is malformed: not a list/object, an empty list,
/// a polygon that is not a list of numbers or has an odd length / fewer than 6 numbers (pycocotools
/// silently drops an odd trailing coordinate and rasterises 2-point "polygons" after the first),
/// a size that is not [h, w] of the image (pycocotools trusts "size"), negative or non-integer
/// counts, counts not summing to h*w, a malformed string (see rle_from_string).
Rle segmentation_to_rle(const nlohmann::json& seg, int h, int w);

}  // namespace instinct::eval
