#!/usr/bin/env python3
"""Fixtures for tests/unit/test_coco_mask.cpp (writes --out DIR, i.e. $INSTINCT_FIXTURES/coco/).

cases.json, every expected value computed by scripts/coco_rle.py (independent numpy reference of
pycocotools' maskApi semantics). RLE counts are column-major runs starting with a 0-run; "mask" is the
row-major mask as a string of '0'/'1' (only for masks up to 64x64); "string" the compressed counts;
"canonical": false marks counts kept verbatim that rle_encode would not produce.
  encode   : masks -> counts, string, area, bbox. Empty / full, single pixels at each corner and the
             centre, borders and frames, 0x0 / 0x5 / 1x1 / 1xN / Nx1 / 7x5, checkerboards and stripes
             (every run 1 long: deltas 0), random masks.
  strings  : counts given directly (no mask when large): runs around the 5-bit group boundaries
             (15, 16, 31, 32, 33, 2^10, 2^15, 2^20, 2^25, positive and negative deltas), full / empty
             2^20-pixel masks, a 6000x6000 mask with runs of 2^25.
  polygons : COCO "segmentation" values -> counts, area, bbox: triangles, concave and self-
             intersecting polygons, vertices outside the image (including -0.3 / -0.35, where C
             truncation differs from floor), on pixel boundaries, half pixels and 1/10 px, repeated
             vertices, degenerate (zero-area) polygons, multi-polygon unions, pycocotools' "first
             polygon has 4 numbers -> boxes" quirk, uncompressed and compressed RLE dicts.
  boxes    : [x, y, w, h] (fractional, negative origin, larger than the image, zero / tiny width) ->
             counts (pycocotools frBbox = the 4-vertex polygon).
  merge    : unions / intersections of 2-3 masks -> counts.
  iou      : (dt, gt, crowd) -> IoU: identical, disjoint pixels with overlapping boxes, disjoint
             boxes, one or both empty (0 by rule), crowd (|D&G|/|D|), polygon-derived masks.
The generator also checks the rasteriser against an exact point-in-polygon test for every pixel centre
farther than 0.5 px from the polygon boundary (independent of the 1/5-px details).
"""
import argparse
import json
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "scripts"))
import coco_rle as ref  # noqa: E402

MAX_MASK_PIXELS = 64 * 64


def mask_str(m):
    return "".join("1" if v else "0" for v in np.asarray(m).reshape(-1))


def describe(counts, h, w, canonical=True):
    e = {"h": h, "w": w, "counts": [int(c) for c in counts], "string": ref.to_string(counts),
         "area": ref.area(counts), "bbox": ref.bbox(counts, h, w)}
    assert ref.from_string(e["string"]) == e["counts"]
    if canonical:
        assert ref.encode(ref.decode(counts, h, w)) == e["counts"]
    else:
        e["canonical"] = False
    if h * w <= MAX_MASK_PIXELS:
        m = ref.decode(counts, h, w)
        e["mask"] = mask_str(m)
    return e


def encode_cases(rng):
    cases = []

    def add(name, m):
        m = np.asarray(m, dtype=np.uint8)
        cases.append({"name": name, **describe(ref.encode(m), *m.shape)})

    add("empty_3x4", np.zeros((3, 4)))
    add("full_3x4", np.ones((3, 4)))
    add("size_0x0", np.zeros((0, 0)))
    add("size_0x5", np.zeros((0, 5)))
    add("one_pixel_on", np.ones((1, 1)))
    add("one_pixel_off", np.zeros((1, 1)))
    for name, (y, x) in {"top_left": (0, 0), "top_right": (0, 4), "bottom_left": (6, 0),
                         "bottom_right": (6, 4), "centre": (3, 2)}.items():
        m = np.zeros((7, 5))
        m[y, x] = 1
        add(f"pixel_{name}_7x5", m)
    m = np.zeros((7, 5)); m[0, :] = 1; add("top_row_7x5", m)
    m = np.zeros((7, 5)); m[-1, :] = 1; add("bottom_row_7x5", m)
    m = np.zeros((7, 5)); m[:, 0] = 1; add("left_col_7x5", m)
    m = np.zeros((7, 5)); m[:, -1] = 1; add("right_col_7x5", m)
    m = np.ones((7, 5)); m[1:-1, 1:-1] = 0; add("frame_7x5", m)
    m = np.zeros((7, 5)); m[1:-1, 1:-1] = 1; add("inner_7x5", m)
    add("row_1x9", [[0, 1, 1, 0, 1, 0, 0, 1, 1]])
    add("col_9x1", [[1], [1], [0], [1], [0], [0], [0], [1], [0]])
    add("row_full_1x9", np.ones((1, 9)))
    yy, xx = np.mgrid[0:7, 0:5]
    add("checker_7x5", (xx + yy) % 2)
    add("checker_inv_7x5", (xx + yy + 1) % 2)
    add("checker_6x4", ((np.mgrid[0:6, 0:4][0] + np.mgrid[0:6, 0:4][1]) % 2))
    add("row_stripes_7x5", yy % 2)
    add("col_stripes_7x5", xx % 2)
    for i, (h, w, p) in enumerate([(7, 5, 0.5), (13, 17, 0.3), (32, 33, 0.5), (64, 64, 0.9), (1, 50, 0.5),
                                   (50, 1, 0.5)]):
        add(f"random_{i}_{h}x{w}", rng.random((h, w)) < p)
    yy, xx = np.mgrid[0:40, 0:37]
    add("disc_40x37", (xx - 18.3) ** 2 + (yy - 20.1) ** 2 < 14.2 ** 2)
    return cases


def strings_cases():
    cases = []

    def add(name, counts, h, w):
        assert sum(counts) == h * w, (name, sum(counts), h * w)
        cases.append({"name": name, **describe(counts, h, w)})

    # counts[i] - counts[i-2] (i > 2) crossing the 5-bit group boundaries in both directions
    deltas = [0, 1, 15, 16, 17, 31, 32, 33, 1023, 1024, 1025]
    counts = [1, 2, 3]
    for d in deltas:
        counts.append(counts[-2] + d)
    for d in deltas:
        counts.append(max(counts[-2] - d, 1))
    h = 7
    pad = (-sum(counts)) % h
    counts[-1] += pad
    add("group_boundaries", counts, h, sum(counts) // h)
    add("raw_first_three", [31, 32, 16, 15, 17], 1, 111)  # i <= 2 stored raw, then deltas -17, -15
    add("single_run_16", [16], 4, 4)  # 16 needs 2 groups ("`0"): bit 0x10 would read as negative
    add("single_run_15", [0, 15], 3, 5)
    n = 1 << 20
    add("empty_2p20", [n], 1024, 1024)
    add("full_2p20", [0, n], 1024, 1024)
    add("long_runs_2p20", [33, 1025, (1 << 15) + 7, 1, n - 33 - 1025 - (1 << 15) - 7 - 1 - 5, 5], 1024, 1024)
    big = 6000 * 6000
    c = [1 << 25, 3, 1 << 20, 1 << 10]
    c.append(big - sum(c))
    add("runs_2p25_6000x6000", c, 6000, 6000)
    c = [5, 1 << 25, 7, 9]
    c.append(big - sum(c))
    add("negative_2p25_6000x6000", c, 6000, 6000)
    return cases


def polygon_cases(rng):
    cases = []
    pip_checked = [0, 0]

    def add(name, seg, h, w, check_pip=True, canonical=True):
        counts = ref.segmentation(seg, h, w)
        cases.append({"name": name, "segmentation": seg, **describe(counts, h, w, canonical)})
        if check_pip and isinstance(seg, list) and len(seg[0]) > 4:
            m = ref.decode(counts, h, w).astype(bool)
            pip = np.zeros((h, w), bool)
            far = np.ones((h, w), bool)
            for p in seg:
                pip |= ref.point_in_polygon_mask(p, h, w)
                far &= ref.distance_to_polygon(p, h, w) > 0.5
            bad = np.flatnonzero(far & (m != pip))
            assert bad.size == 0, f"{name}: rasteriser disagrees with point-in-polygon at {bad[:10]}"
            pip_checked[0] += int(far.sum())
            pip_checked[1] += int((~far).sum())

    add("triangle", [[2.0, 1.0, 17.5, 6.25, 5.3, 14.9]], 20, 30)
    add("triangle_reversed", [[5.3, 14.9, 17.5, 6.25, 2.0, 1.0]], 20, 30)
    add("square_integer", [[3, 3, 9, 3, 9, 8, 3, 8]], 12, 12)
    add("square_half_pixels", [[2.5, 2.5, 7.5, 2.5, 7.5, 6.5, 2.5, 6.5]], 12, 12)
    add("square_tenths", [[2.1, 2.3, 7.9, 2.1, 7.7, 6.9, 2.3, 6.7]], 12, 12)
    add("thin_diagonal", [[0, 0, 29.7, 19.2, 29.9, 19.9, 0.4, 0.3]], 20, 30)
    add("star_concave", [[15, 1, 18, 10, 28, 10, 20, 15, 24, 25, 15, 18, 6, 25, 10, 15, 2, 10, 12, 10]], 27, 30)
    add("bowtie_self_intersecting", [[2, 2, 18, 12, 18, 2, 2, 12]], 15, 20)
    add("outside_negative", [[-3.3, -2.2, 8.7, -1.0, 6.1, 9.4, -0.35, 7.0]], 10, 10)
    add("trunc_vs_floor", [[-0.38, 7.6, 6.01, -0.39, 11.69, 7.87]], 10, 12)  # floor instead: area 53, not 51
    add("outside_all_sides", [[-5, -5, 25, -4, 26, 17, -6, 18]], 12, 20)
    add("completely_outside", [[30, 30, 40, 30, 40, 40]], 12, 20, check_pip=False)
    add("touching_right_bottom", [[10.2, 5.1, 20, 5, 20, 12, 9.8, 12]], 12, 20)
    add("repeated_vertices", [[3, 3, 3, 3, 12, 4, 12, 4, 12, 4, 8, 11, 3, 3]], 14, 14)
    add("degenerate_collinear", [[1, 1, 5, 5, 9, 9]], 12, 12)
    add("degenerate_line", [[2, 3, 10, 3, 6, 3]], 12, 12)
    add("multi_disjoint", [[1, 1, 5, 1, 5, 5, 1, 5], [8, 6, 12.5, 6.5, 10, 11]], 14, 14)
    add("multi_overlapping", [[1, 1, 9, 1, 9, 9, 1, 9], [5, 5, 13, 5.5, 12.2, 12.7, 4.4, 13]], 14, 14)
    add("multi_nested", [[0, 0, 14, 0, 14, 14, 0, 14], [4, 4, 9, 4, 9, 9]], 14, 14)
    add("multi_three", [[0.5, 0.5, 4, 0.5, 2, 4], [6, 6, 10, 6, 10, 10], [3, 8, 5, 12, 1, 12]], 13, 11)
    add("boxes_quirk", [[1, 1, 4, 3], [6.5, 2.2, 3, 5.1]], 10, 12)
    add("box_quirk_single", [[0.5, 0.5, 1, 1]], 3, 3)
    for i in range(8):
        h, w = int(rng.integers(8, 60)), int(rng.integers(8, 60))
        k = int(rng.integers(3, 12))
        ang = np.sort(rng.uniform(0, 2 * np.pi, k))
        r = rng.uniform(0.2, 0.7, k) * min(h, w)
        cx, cy = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h
        poly = np.stack([cx + r * np.cos(ang), cy + r * np.sin(ang)], 1).reshape(-1)
        add(f"random_{i}_{h}x{w}", [[round(float(v), 2) for v in poly]], h, w)
    m = np.zeros((6, 7), np.uint8)
    m[1:4, 2:6] = 1
    m[5, 0] = 1
    add("uncompressed_rle", {"size": [6, 7], "counts": ref.encode(m)}, 6, 7)
    # kept verbatim (a zero-length 0-run inside); toBbox still gives the tight box here
    add("uncompressed_non_canonical", {"size": [3, 4], "counts": [3, 2, 0, 4, 3]}, 3, 4, canonical=False)
    add("compressed_rle", {"size": [6, 7], "counts": ref.to_string(ref.encode(m))}, 6, 7)
    add("compressed_rle_empty", {"size": [5, 5], "counts": ref.to_string([25])}, 5, 5)
    print(f"fixtures_coco: point-in-polygon agrees on {pip_checked[0]} pixels "
          f"({pip_checked[1]} within 0.5 px of an edge not compared)")
    return cases


def box_cases():
    cases = []
    for name, box, h, w in [
        ("integer", [1, 1, 3, 2], 6, 6),
        ("full_image", [0, 0, 7, 5], 5, 7),
        ("half_pixel", [0.5, 0.5, 1, 1], 3, 3),
        ("fractional", [2.3, 1.7, 4.45, 3.05], 9, 11),
        ("negative_origin", [-2.2, -1.1, 5, 5], 8, 8),
        ("larger_than_image", [-3, -3, 30, 30], 6, 9),
        ("zero_width", [2, 2, 0, 4], 8, 8),
        ("tiny_width", [2.45, 2, 0.1, 4], 8, 8),
        ("tiny_width_on_centre", [2.4, 2, 0.2, 4], 8, 8),
        ("edge_touching", [5.5, 0, 2.5, 3.5], 6, 8),
    ]:
        counts = ref.fr_bbox(box, h, w)
        cases.append({"name": name, "box": box, **describe(counts, h, w)})
    return cases


def merge_cases(rng):
    cases = []
    for i, (h, w, n, intersect) in enumerate([(7, 5, 2, False), (7, 5, 2, True), (16, 13, 3, False),
                                              (16, 13, 3, True), (9, 9, 2, False)]):
        masks = [rng.random((h, w)) < 0.4 for _ in range(n)]
        if i == 4:
            masks = [np.zeros((h, w), bool), np.ones((h, w), bool)]
        inputs = [ref.encode(m) for m in masks]
        cases.append({"name": f"merge_{i}_{'and' if intersect else 'or'}", "h": h, "w": w, "inputs": inputs,
                      "intersect": intersect, "counts": ref.merge(inputs, h, w, intersect)})
    # disjoint intersection -> all zeros
    a, b = np.zeros((6, 6), bool), np.zeros((6, 6), bool)
    a[:3], b[3:] = True, True
    inputs = [ref.encode(a), ref.encode(b)]
    cases.append({"name": "merge_disjoint_and", "h": 6, "w": 6, "inputs": inputs, "intersect": True,
                  "counts": ref.merge(inputs, 6, 6, True)})
    return cases


def iou_cases(rng):
    cases = []

    def add(name, d, g, crowd=False):
        d, g = np.asarray(d, bool), np.asarray(g, bool)
        h, w = d.shape
        dt, gt = ref.encode(d), ref.encode(g)
        cases.append({"name": name, "h": h, "w": w, "dt": dt, "gt": gt, "crowd": crowd,
                      "iou": ref.iou(dt, gt, h, w, crowd)})

    for i in range(4):
        h, w = int(rng.integers(5, 40)), int(rng.integers(5, 40))
        d, g = rng.random((h, w)) < 0.3, rng.random((h, w)) < 0.5
        add(f"random_{i}", d, g)
        add(f"random_{i}_crowd", d, g, crowd=True)
    m = rng.random((9, 8)) < 0.5
    add("identical", m, m)
    add("identical_crowd", m, m, crowd=True)
    yy, xx = np.mgrid[0:10, 0:10]
    add("disjoint_pixels_overlapping_boxes", (xx + yy) % 2 == 0, (xx + yy) % 2 == 1)
    add("disjoint_boxes", xx < 3, xx > 6)
    e = np.zeros((10, 10), bool)
    add("dt_empty", e, xx < 3)
    add("gt_empty", xx < 3, e)
    add("both_empty", e, e)
    add("both_empty_crowd", e, e, crowd=True)
    add("crowd_dt_inside", (xx < 4) & (yy < 4), xx < 6, crowd=True)
    add("crowd_dt_larger", xx < 8, (xx < 3) & (yy < 5), crowd=True)
    h, w = 30, 40
    p = ref.decode(ref.segmentation([[3, 4, 30.5, 6, 25, 27.2, 5, 20]], h, w), h, w)
    q = ref.decode(ref.fr_bbox([4.5, 3.2, 24, 22], h, w), h, w)
    add("polygon_vs_box", p, q)
    add("polygon_vs_box_crowd", p, q, crowd=True)
    return cases


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(20240607)
    cases = {"encode": encode_cases(rng), "strings": strings_cases(), "polygons": polygon_cases(rng),
             "boxes": box_cases(), "merge": merge_cases(rng), "iou": iou_cases(rng)}
    (out / "cases.json").write_text(json.dumps(cases))
    print(f"fixtures_coco: {sum(len(v) for v in cases.values())} cases -> {out / 'cases.json'}")


if __name__ == "__main__":
    main()
