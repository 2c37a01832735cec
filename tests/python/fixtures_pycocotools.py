#!/usr/bin/env python3
"""Fixtures for tests/unit/test_coco_mask.cpp with the REAL pycocotools as the reference (writes --out
DIR, i.e. $INSTINCT_FIXTURES/pycocotools/). pycocotools is built from $INSTINCT_COCOAPI_SRC (.ci/run
points it at ../shared/cocoapi) into DIR/../_ref_build by tests/python/ref_sources.py; without it this
writes SKIPPED and the tests skip with the reason.

cases.json has the schema of coco/cases.json (tests/python/fixtures_coco.py): sections encode / strings /
polygons / boxes / merge / iou, every expected value computed by pycocotools' own API:
  string  the compressed counts pycocotools returns (mask.encode / frPyObjects / frBbox / merge);
  counts  run lengths of pycocotools' decoded mask (mask.decode, a few lines of numpy), or the input
          counts verbatim where the case gives counts ("canonical": false marks zero-length runs);
  area, bbox  mask.area / mask.toBbox of pycocotools' string (bbox also for non-canonical counts);
  mask    pycocotools' decoded mask, row-major '0'/'1' (masks up to 64x64; all encode inputs);
  iou     mask.iou(dts, gts, iscrowd), a matrix per call, stored one (dt, gt, crowd) pair per case;
  merge   also carries pycocotools' string of the merged RLE.
Polygons go through COCO.annToRLE's route (frPyObjects, then merge), boxes through frBbox.
scripts/coco_rle.py is not used for any expected value.

Cases: the edge cases of coco/cases.json (re-evaluated here; the file is made by fixtures_coco.py when
missing), then seeded random ones: masks of random sizes (1xN, Nx1, up to 200x200) and densities, and
structured ones (discs, rectangles, stripes, checkerboards, long runs); compressed strings with runs up
to 2^25 in images up to 6000x6000, some with zero-length runs; polygons with vertices outside the
image, at integer / half / tenth / fifth / arbitrary fractional positions, in (-1, 0) (C truncation),
far away (|v| up to 2e4), concave, self-intersecting, degenerate, 2-4 parts; boxes (fractional,
negative origin, beyond the image, tiny, zero or negative width); merges of 1-4 masks (union and
intersection, some with zero-length runs); IoU matrices of 1-4 x 1-4 masks with random crowd flags.

Excluded (pycocotools is undefined, raises or differs by design on such malformed input; see the
"pycocotools:" notes in include/instinct/eval/coco_mask.h):
  - compressed values with |delta| >= 2^29 (its 32-bit shifts), images over 2^29 pixels;
  - counts not summing to h*w, sizes that differ between merged / compared masks, merges of 0 masks;
  - a polygon list whose first polygon has exactly 4 numbers: frPyObjects sends it to frBbox, which
    raises TypeError on a list (ours reads the list as boxes, as the numpy reference does);
  - polygons with an odd length or fewer than 6 numbers after the first (ours throws);
  - |coordinate| >= 2^27 (int overflow there; ours throws), masks with values other than 0/1;
  - non-canonical inputs whose run count exceeds h*w+1 (rleMerge's buffer), and merges where more
    than one input has zero-length runs (two of them at the same pixel end rleMerge's walk early and
    leave an RLE that does not cover h*w pixels).
"""
import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ref_sources  # noqa: E402

MAX_MASK_PIXELS = 64 * 64
SEED = 20250613


def mask_str(m):
    return "".join("1" if v else "0" for v in np.asarray(m).reshape(-1))


def runs(mask):
    """Column-major run lengths of a (h, w) mask, starting with a (possibly empty) 0-run."""
    f = np.asarray(mask).ravel(order="F") != 0
    if f.size == 0:
        return [0]
    change = np.flatnonzero(f[1:] != f[:-1]) + 1
    c = np.diff(np.concatenate([[0], change, [f.size]])).tolist()
    return [0] + c if f[0] else c


class Ref:
    """pycocotools' mask API plus the bookkeeping that turns its answers into fixture entries."""

    def __init__(self, api):
        self.api = api

    def rle(self, counts, h, w):
        return self.api.frPyObjects({"size": [h, w], "counts": [int(c) for c in counts]}, h, w)

    def encode(self, m):
        return self.api.encode(np.asfortranarray(np.asarray(m, dtype=np.uint8)))

    def decode(self, rle):
        return self.api.decode(rle)

    def seg(self, seg, h, w):
        """COCO.annToRLE for an annotation of an h x w image."""
        if isinstance(seg, list):
            return self.api.merge(self.api.frPyObjects(seg, h, w))
        if isinstance(seg["counts"], list):
            return self.api.frPyObjects(seg, h, w)
        return {"size": seg["size"], "counts": seg["counts"].encode()}

    def describe(self, rle, counts=None, with_mask=None, decode=True):
        """Entry fields from pycocotools' RLE. `counts`: the verbatim input counts (checked against
        pycocotools' decoded mask when canonical); otherwise the runs of the decoded mask."""
        h, w = (int(v) for v in rle["size"])
        e = {"h": h, "w": w}
        m = self.decode(rle) if decode else None
        if m is not None:
            assert m.shape == (h, w), (m.shape, h, w)
        derived = runs(m) if m is not None else None
        if counts is None:
            counts = derived
        counts = [int(c) for c in counts]
        canonical = all(c > 0 for c in counts[1:])
        if canonical and derived is not None:
            assert derived == counts, "pycocotools decodes the counts to another mask"
        e["counts"] = counts
        e["string"] = rle["counts"].decode()
        e["area"] = int(self.api.area(rle))
        e["bbox"] = [float(v) for v in self.api.toBbox(rle)]
        if not canonical:
            e["canonical"] = False
        if m is not None and (with_mask or (with_mask is None and h * w <= MAX_MASK_PIXELS)):
            e["mask"] = mask_str(m)
        if canonical and m is not None:  # pycocotools' encoder gives its own string back
            assert self.encode(m)["counts"] == rle["counts"]
        return e


# ---------------------------------------------------------------------------------------------------
# The edge cases of coco/cases.json, re-evaluated by pycocotools.

def edge_cases(ref, coco, skipped):
    out = {k: [] for k in ("encode", "strings", "polygons", "boxes", "merge", "iou")}
    for c in coco["encode"]:
        m = np.array([ch == "1" for ch in c["mask"]], np.uint8).reshape(c["h"], c["w"])
        out["encode"].append({"name": "edge_" + c["name"], **ref.describe(ref.encode(m), with_mask=True)})
    for c in coco["strings"]:
        out["strings"].append({"name": "edge_" + c["name"], **ref.describe(ref.rle(c["counts"], c["h"], c["w"]),
                                                                           counts=c["counts"])})
    for c in coco["polygons"]:
        seg = c["segmentation"]
        if isinstance(seg, list) and len(seg[0]) == 4:
            skipped.append(c["name"])  # frBbox raises TypeError on a list (see the docstring)
            continue
        verbatim = seg["counts"] if isinstance(seg, dict) and isinstance(seg["counts"], list) else None
        out["polygons"].append({"name": "edge_" + c["name"], "segmentation": seg,
                                **ref.describe(ref.seg(seg, c["h"], c["w"]), counts=verbatim)})
    for c in coco["boxes"]:
        out["boxes"].append(box_case(ref, "edge_" + c["name"], c["box"], c["h"], c["w"]))
    for c in coco["merge"]:
        out["merge"].append(merge_case(ref, "edge_" + c["name"], c["inputs"], c["h"], c["w"], c["intersect"]))
    for c in coco["iou"]:
        out["iou"] += iou_cases(ref, "edge_" + c["name"], [c["dt"]], [c["gt"]], [c["crowd"]], c["h"], c["w"])
    return out


def box_case(ref, name, box, h, w):
    rle = ref.api.frPyObjects(np.array([box], dtype=np.double), h, w)[0]  # -> frBbox
    return {"name": name, "box": [float(v) for v in box], **ref.describe(rle)}


def merge_case(ref, name, inputs, h, w, intersect):
    rle = ref.api.merge([ref.rle(c, h, w) for c in inputs], intersect=int(intersect))
    m = ref.decode(rle)
    return {"name": name, "h": h, "w": w, "inputs": [[int(v) for v in c] for c in inputs], "intersect": bool(intersect),
            "counts": runs(m), "string": rle["counts"].decode()}


def iou_cases(ref, name, dts, gts, crowd, h, w):
    """One pycocotools iou() call (a len(dts) x len(gts) matrix) -> one case per pair."""
    o = np.asarray(ref.api.iou([ref.rle(c, h, w) for c in dts], [ref.rle(c, h, w) for c in gts],
                               [int(v) for v in crowd]))
    assert o.shape == (len(dts), len(gts)), o.shape
    return [{"name": f"{name}_d{d}_g{g}" if o.size > 1 else name, "h": h, "w": w, "dt": [int(v) for v in dts[d]],
             "gt": [int(v) for v in gts[g]], "crowd": bool(crowd[g]), "iou": float(o[d, g])}
            for d in range(len(dts)) for g in range(len(gts))]


# ---------------------------------------------------------------------------------------------------
# Random inputs (numpy only builds inputs; pycocotools gives every expected value).

def rand_size(rng, lo=1, hi=64):
    kind = rng.integers(10)
    if kind == 0:
        return 1, int(rng.integers(1, 200))
    if kind == 1:
        return int(rng.integers(1, 200)), 1
    return int(rng.integers(lo, hi + 1)), int(rng.integers(lo, hi + 1))


def rand_mask(rng, h, w):
    kind = int(rng.integers(9))
    yy, xx = np.mgrid[0:h, 0:w]
    if kind == 0:  # uniform density, including empty and full
        return rng.random((h, w)) < rng.choice([0.0, 0.02, 0.1, 0.3, 0.5, 0.7, 0.9, 0.98, 1.0])
    if kind == 1:  # discs / ellipses
        m = np.zeros((h, w), bool)
        for _ in range(int(rng.integers(1, 4))):
            cx, cy = rng.uniform(-0.2, 1.2) * w, rng.uniform(-0.2, 1.2) * h
            rx, ry = rng.uniform(0.3, 0.6 * w + 1), rng.uniform(0.3, 0.6 * h + 1)
            m |= ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 < 1
        return m
    if kind == 2:  # rectangles, possibly touching the borders
        m = np.zeros((h, w), bool)
        for _ in range(int(rng.integers(1, 4))):
            x0, x1 = np.sort(rng.integers(0, w + 1, 2))
            y0, y1 = np.sort(rng.integers(0, h + 1, 2))
            m[y0:y1, x0:x1] = True
        return m
    if kind == 3:  # stripes
        p = int(rng.integers(1, 5))
        return ((yy if rng.random() < 0.5 else xx) // p) % 2 == int(rng.integers(2))
    if kind == 4:  # checkerboard (every run 1 long when the cell is 1)
        p = int(rng.integers(1, 4))
        return (xx // p + yy // p) % 2 == int(rng.integers(2))
    if kind == 5:  # long runs in column-major order
        n, f, v, i = h * w, np.zeros(h * w, bool), bool(rng.integers(2)), 0
        while i < n:
            k = int(rng.geometric(1.0 / rng.uniform(1, max(2, n / 3))))
            f[i:i + k] = v
            v, i = not v, i + k
        return f.reshape((h, w), order="F")
    if kind == 6:  # thin lines
        m = np.zeros((h, w), bool)
        m[np.abs(xx * h - yy * w - rng.integers(-h * w, h * w + 1) // 2) < max(h, w)] = True
        return m
    if kind == 7:  # single pixels
        m = np.zeros((h, w), bool)
        m.flat[rng.integers(0, h * w, int(rng.integers(1, 4)))] = True
        return m
    return ~rand_mask(rng, h, w)  # complements: masks that start with a 1-run


def non_canonical(rng, counts, h, w):
    """The same mask with zero-length runs inserted (kept verbatim by both sides)."""
    c = list(counts)
    for _ in range(int(rng.integers(1, 4))):
        kind = int(rng.integers(3))
        if kind == 0:  # a pair of empty runs between two runs (or first: toBbox's uint index wraps)
            i = int(rng.integers(0, len(c) + 1))
            c[i:i] = [0, 0]
        elif kind == 1:  # a run split around an empty run of the other value
            i = int(rng.integers(len(c)))
            a = int(rng.integers(0, c[i] + 1))
            c[i:i + 1] = [a, 0, c[i] - a]
        elif len(c) % 2 == 0:  # an empty trailing 0-run after a final 1-run
            c.append(0)
    assert sum(c) == h * w
    return c if len(c) <= h * w + 1 else list(counts)


def random_encode(ref, rng, n):
    cases = []
    for i in range(n):
        h, w = rand_size(rng) if i >= 12 else (int(rng.integers(100, 201)), int(rng.integers(100, 201)))
        m = rand_mask(rng, h, w)
        rle = ref.encode(m)
        assert np.array_equal(ref.decode(rle), m.astype(np.uint8))
        cases.append({"name": f"rand_mask_{i}_{h}x{w}", **ref.describe(rle, with_mask=True)})
    return cases


def random_strings(ref, rng, n):
    cases = []
    for i in range(n):
        big = i < 6
        h, w = (int(rng.integers(1000, 6001)), int(rng.integers(1000, 6001))) if big else \
            (int(rng.integers(1, 2049)), int(rng.integers(1, 2049)))
        total, counts = h * w, []
        scale = float(rng.choice([2.0 ** 5, 2.0 ** 10, 2.0 ** 15, 2.0 ** 20, 2.0 ** 25]))
        while sum(counts) < total and len(counts) < 400:  # runs >= 1 (the first may be 0), up to `scale`
            c = int(rng.integers(1 if counts else 0, max(2, int(scale * rng.random()) + 1)))
            counts.append(min(c, total - sum(counts)))
        counts[-1] += total - sum(counts)  # the last run takes the rest
        if i % 7 == 3:
            counts = non_canonical(rng, counts, h, w)
        deltas = [counts[j] - (counts[j - 2] if j > 2 else 0) for j in range(len(counts))]
        assert max(abs(d) for d in deltas) < 2 ** 29
        rle = ref.rle(counts, h, w)
        cases.append({"name": f"rand_string_{i}_{h}x{w}", **ref.describe(rle, counts=counts, decode=h * w <= 4_000_000)})
    return cases


def rand_coords(rng, k, h, w):
    q = rng.choice([1.0, 0.5, 0.1, 0.2, 0.25, 0.01, 0.0])
    kind = int(rng.integers(6))
    if kind == 0:  # star-shaped around a centre: concave when radii vary
        ang = np.sort(rng.uniform(0, 2 * np.pi, k))
        r = rng.uniform(0.05, 0.8, k) * max(h, w)
        cx, cy = rng.uniform(-0.2, 1.2) * w, rng.uniform(-0.2, 1.2) * h
        xy = np.stack([cx + r * np.cos(ang), cy + r * np.sin(ang)], 1)
    elif kind == 1:  # random order: self-intersecting
        xy = np.stack([rng.uniform(-0.3, 1.3, k) * w, rng.uniform(-0.3, 1.3, k) * h], 1)
    elif kind == 2:  # sub-pixel
        x0, y0 = rng.uniform(-1, w), rng.uniform(-1, h)
        xy = np.stack([x0 + rng.uniform(0, 2, k), y0 + rng.uniform(0, 2, k)], 1)
    elif kind == 3:  # around the origin: (-1, 0) truncates toward zero
        xy = np.stack([rng.uniform(-1, 3, k), rng.uniform(-1, 3, k)], 1)
        if rng.random() < 0.5:
            xy = xy * [[max(1, w / 4), max(1, h / 4)]]
    elif kind == 4:  # far outside
        xy = np.stack([rng.uniform(-0.5, 1.5, k) * w, rng.uniform(-0.5, 1.5, k) * h], 1)
        j = rng.integers(k)
        xy[j] = rng.uniform(-2e4, 2e4, 2)
    else:  # degenerate: collinear or repeated vertices
        t = np.sort(rng.uniform(-0.2, 1.2, k)) if rng.random() < 0.5 else np.repeat(rng.uniform(0, 1, (k + 1) // 2), 2)[:k]
        xy = np.stack([t * w, (t * rng.uniform(-1, 1) + rng.uniform(0, 1)) * h], 1)
        if rng.random() < 0.5:
            xy += rng.normal(0, 0.3, xy.shape)
    if q > 0:
        xy = np.round(xy / q) * q
    return [round(float(v), 10) for v in xy.reshape(-1)]


def random_polygons(ref, rng, n):
    cases = []
    for i in range(n):
        h, w = rand_size(rng, 1, 80)
        kind = int(rng.integers(10))
        if kind < 6:
            seg = [rand_coords(rng, int(rng.integers(3, 14)), h, w)]
        elif kind < 9:
            seg = [rand_coords(rng, int(rng.integers(3, 9)), h, w) for _ in range(int(rng.integers(2, 5)))]
        else:  # RLE segmentations (uncompressed, some with zero-length runs; compressed)
            counts = runs(rand_mask(rng, h, w))
            if rng.random() < 0.3:
                counts = non_canonical(rng, counts, h, w)
            seg = {"size": [h, w], "counts": counts}
            if rng.random() < 0.5 and all(c > 0 for c in counts[1:]):
                seg = {"size": [h, w], "counts": ref.encode(ref.decode(ref.rle(counts, h, w)))["counts"].decode()}
        verbatim = seg["counts"] if isinstance(seg, dict) and isinstance(seg["counts"], list) else None
        cases.append({"name": f"rand_poly_{i}_{h}x{w}", "segmentation": seg,
                      **ref.describe(ref.seg(seg, h, w), counts=verbatim)})
    return cases


def random_boxes(ref, rng, n):
    cases = []
    for i in range(n):
        h, w = rand_size(rng, 1, 80)
        kind = int(rng.integers(6))
        x, y = rng.uniform(-0.3, 1.1) * w, rng.uniform(-0.3, 1.1) * h
        bw, bh = rng.uniform(0, 1.2) * w, rng.uniform(0, 1.2) * h
        if kind == 1:  # tiny
            bw, bh = rng.uniform(0, 0.4), rng.uniform(0, 0.4) * (rng.random() < 0.5) + rng.uniform(0, h) * (rng.random() < 0.5)
        elif kind == 2:  # beyond the image on every side
            x, y, bw, bh = -rng.uniform(0, 5), -rng.uniform(0, 5), w + rng.uniform(5, 10), h + rng.uniform(5, 10)
        elif kind == 3:  # zero or negative extent
            bw = 0.0 if rng.random() < 0.5 else -rng.uniform(0, w)
        q = rng.choice([1.0, 0.5, 0.1, 0.2, 0.0])
        box = [x, y, bw, bh]
        if q > 0:
            box = [float(np.round(v / q) * q) for v in box]
        box = [round(float(v), 10) for v in box]
        cases.append(box_case(ref, f"rand_box_{i}_{h}x{w}", box, h, w))
    return cases


def random_merges(ref, rng, n):
    cases = []
    for i in range(n):
        h, w = rand_size(rng, 1, 40)
        k = int(rng.integers(1, 5)) if i % 10 else 1
        inputs = [runs(rand_mask(rng, h, w)) for _ in range(k)]
        if i % 4 == 1:  # one input only: two zero-length runs at the same pixel end rleMerge's walk early
            j = int(rng.integers(k))
            nc = non_canonical(rng, inputs[j], h, w)
            if sum(len(c) for c in inputs) + len(nc) - len(inputs[j]) <= h * w + 1:
                inputs[j] = nc
        intersect = bool(rng.integers(2))
        cases.append(merge_case(ref, f"rand_merge_{i}_{'and' if intersect else 'or'}_{k}_{h}x{w}", inputs, h, w,
                                intersect))
    return cases


def random_ious(ref, rng, n):
    cases = []
    for i in range(n):
        h, w = rand_size(rng, 1, 40)
        md, mg = int(rng.integers(1, 5)), int(rng.integers(1, 5))
        base = rand_mask(rng, h, w)

        def one():
            r = rng.random()
            if r < 0.3:  # overlapping the shared base
                m = base ^ (rng.random((h, w)) < rng.uniform(0, 0.3))
            elif r < 0.5:
                m = base & rand_mask(rng, h, w)
            elif r < 0.6:
                m = np.zeros((h, w), bool)
            else:
                m = rand_mask(rng, h, w)
            c = runs(m)
            return non_canonical(rng, c, h, w) if i % 5 == 4 else c

        dts, gts = [one() for _ in range(md)], [one() for _ in range(mg)]
        crowd = [bool(v) for v in rng.random(mg) < 0.4]
        cases += iou_cases(ref, f"rand_iou_{i}_{h}x{w}", dts, gts, crowd, h, w)
    return cases


def coco_edge_file(out):
    """coco/cases.json beside `out`, made by fixtures_coco.py when missing."""
    path = out.parent / "coco" / "cases.json"
    if path.exists():
        return json.loads(path.read_text())
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, str(pathlib.Path(__file__).with_name("fixtures_coco.py")), "--out", tmp],
                       check=True, stdout=subprocess.DEVNULL)
        return json.loads((pathlib.Path(tmp) / "cases.json").read_text())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    out = pathlib.Path(args.out).resolve()
    t0 = time.time()
    api, why = ref_sources.pycocotools(out.parent / "_ref_build")
    if api is None:
        ref_sources.skip(out, f"pycocotools: {why}")
        return
    ref_sources.unskip(out)
    out.mkdir(parents=True, exist_ok=True)
    t1 = time.time()
    ref, rng, skipped = Ref(api), np.random.default_rng(SEED), []
    cases = edge_cases(ref, coco_edge_file(out), skipped)
    n_edge = sum(len(v) for v in cases.values())
    cases["encode"] += random_encode(ref, rng, 1200)
    cases["strings"] += random_strings(ref, rng, 300)
    cases["polygons"] += random_polygons(ref, rng, 1500)
    cases["boxes"] += random_boxes(ref, rng, 1000)
    cases["merge"] += random_merges(ref, rng, 600)
    cases["iou"] += random_ious(ref, rng, 250)
    text = json.dumps(cases, separators=(",", ":"))
    (out / "cases.json").write_text(text)
    total = sum(len(v) for v in cases.values())
    print(f"fixtures_pycocotools: {total} cases ({n_edge} edge cases of coco/cases.json, "
          f"{len(skipped)} left out: {', '.join(skipped)}; "
          + ", ".join(f"{k} {len(v)}" for k, v in cases.items())
          + f") -> {out / 'cases.json'} ({len(text) / 1e6:.1f} MB; build {t1 - t0:.1f} s, cases {time.time() - t1:.1f} s)")


if __name__ == "__main__":
    main()
