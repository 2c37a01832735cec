"""COCO RLE masks in numpy with pycocotools maskApi semantics, written from the format description in
../shared/reference/evaluation.md. Used by scripts/make_toy_world.py to write and verify annotations,
and by the tests as the independent reference for src/eval/coco_mask.cpp (tests/python/fixtures_coco.py
and the instinct-eval CLI tests).

It deliberately takes other routes than src/eval/coco_mask.cpp where the semantics allow:
decode-then-numpy for bbox / merge / IoU, change points for encode, a parity cumsum instead of
run arithmetic in the polygon rasteriser. Masks are numpy (h, w) arrays, row-major as usual;
RLE counts are python lists of ints in column-major (Fortran) order starting with a 0-run.
"""
import numpy as np

SCALE = 5.0


def encode(mask):
    m = np.asarray(mask)
    h, w = m.shape
    flat = (m != 0).flatten(order="F").astype(np.int8)
    if flat.size == 0:
        return [0]
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat[0] == 1:
        runs = [0] + runs
    return [int(r) for r in runs]


def decode(counts, h, w):
    counts = np.asarray(counts, dtype=np.int64)
    assert counts.sum() == h * w, (counts.sum(), h, w)
    vals = (np.arange(len(counts)) % 2).astype(np.uint8)
    return np.repeat(vals, counts).reshape((h, w), order="F")


def to_string(counts):
    out = []
    for i, c in enumerate(counts):
        x = int(c) - (int(counts[i - 2]) if i > 2 else 0)
        while True:
            group = x & 0x1F
            x >>= 5  # python ints: arithmetic shift, negatives end at -1
            last = (x == -1) if (group & 0x10) else (x == 0)
            out.append(chr(48 + (group if last else group | 0x20)))
            if last:
                break
    return "".join(out)


def from_string(s):
    counts, p = [], 0
    while p < len(s):
        x, k = 0, 0
        while True:
            c = ord(s[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            p += 1
            k += 1
            if not c & 0x20:
                if c & 0x10:
                    x -= 1 << (5 * k)  # sign-extend
                break
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def area(counts):
    return int(sum(counts[1::2]))


def bbox(counts, h, w):
    """Tight [x, y, w, h] of the on pixels (pycocotools toBbox for canonical RLEs); zeros if empty."""
    m = decode(counts, h, w)
    ys, xs = np.nonzero(m)
    if xs.size == 0:
        return [0.0, 0.0, 0.0, 0.0]
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]


def _ctrunc(a):
    """C's (int) cast of a double: truncation toward zero."""
    return np.trunc(a).astype(np.int64)


def fr_poly_mask(xy, h, w):
    """rleFrPoly as a mask: vertices x5 + rounded (C truncation), edges walked at 1/5 px along the major
    axis from the endpoint with the smaller major coordinate, toggles where the walk crosses a pixel
    centre column, pixels on by parity of the toggles at or before them in column-major order."""
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    if h * w == 0:
        return np.zeros((h, w), np.uint8)
    X = _ctrunc(SCALE * xy[:, 0] + 0.5)
    Y = _ctrunc(SCALE * xy[:, 1] + 0.5)
    xs, ys, xe, ye = X, Y, np.roll(X, -1), np.roll(Y, -1)
    dx, dy = np.abs(xe - xs), np.abs(ye - ys)
    major = dx >= dy  # x is the walk's axis
    flip = np.where(major, xs > xe, ys > ye)
    xs, xe = np.where(flip, xe, xs), np.where(flip, xs, xe)
    ys, ye = np.where(flip, ye, ys), np.where(flip, ys, ye)
    still = (dx == 0) & (dy == 0)  # repeated vertex (0/0 in C, but its v is never used): one point
    span = np.where(major, dx, dy)
    s = np.where(major, ye - ys, xe - xs) / np.maximum(span, 1)
    n = np.where(still, 1, span + 1)  # points walked per edge, all edges at once
    e = np.repeat(np.arange(len(n)), n)
    k = np.arange(e.size) - np.repeat(np.cumsum(n) - n, n)
    t = np.where(flip[e], span[e] - k, k)
    walked = _ctrunc(np.where(major, ys, xs)[e] + s[e] * t + 0.5)
    u = np.where(still[e], xs[e], np.where(major[e], t + xs[e], walked))
    v = np.where(still[e], ys[e], np.where(major[e], walked, t + ys[e]))
    moved = np.flatnonzero(u[1:] != u[:-1]) + 1
    uj, up, vj, vp = u[moved], u[moved - 1], v[moved], v[moved - 1]
    xd = (np.where(uj < up, uj, uj - 1) + 0.5) / SCALE - 0.5
    keep = (np.floor(xd) == xd) & (xd >= 0) & (xd <= w - 1)
    yd = (np.minimum(vj, vp) + 0.5) / SCALE - 0.5
    yd = np.ceil(np.clip(yd, 0, h))
    pts = (xd[keep].astype(np.int64) * h + yd[keep].astype(np.int64))
    toggles = np.bincount(pts, minlength=h * w + 1)[: h * w]
    on = (np.cumsum(toggles) % 2).astype(np.uint8)
    return on.reshape((h, w), order="F")


def fr_poly(xy, h, w):
    return encode(fr_poly_mask(xy, h, w))


def _box_polygon(box):
    x, y, bw, bh = box
    return [x, y, x, y + bh, x + bw, y + bh, x + bw, y]


def fr_bbox(box, h, w):
    return fr_poly(_box_polygon(box), h, w)


def merge(list_of_counts, h, w, intersect=False):
    masks = [decode(c, h, w).astype(bool) for c in list_of_counts]
    m = masks[0]
    for o in masks[1:]:
        m = (m & o) if intersect else (m | o)
    return encode(m)


def _polygons_mask(seg, h, w):
    """The union of a COCO polygon list as a mask (first polygon of 4 numbers -> boxes)."""
    m = np.zeros((h, w), np.uint8)
    for p in seg:
        m |= fr_poly_mask(_box_polygon(p) if len(seg[0]) == 4 else p, h, w)
    return m


def segmentation(seg, h, w):
    """COCO annToRLE: polygon list (union; first polygon of 4 numbers -> boxes), uncompressed or
    compressed RLE dict."""
    if isinstance(seg, list):
        return encode(_polygons_mask(seg, h, w))
    if isinstance(seg["counts"], list):
        return list(seg["counts"])
    return from_string(seg["counts"])


def mask(seg, h, w):
    """Any COCO segmentation (polygons, uncompressed or compressed RLE) -> bool (h, w) mask."""
    if isinstance(seg, list):
        return _polygons_mask(seg, h, w).astype(bool)
    return decode(segmentation(seg, h, w), h, w).astype(bool)


def iou(dt, gt, h, w, crowd=False):
    d = decode(dt, h, w).astype(bool)
    g = decode(gt, h, w).astype(bool)
    inter = int((d & g).sum())
    if inter == 0:
        return 0.0
    union = int(d.sum()) if crowd else int((d | g).sum())
    return inter / union


def point_in_polygon_mask(xy, h, w):
    """Even-odd test of every pixel centre against the exact polygon (no 1/5-px rounding): an
    independent sanity check of the rasteriser away from edges."""
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    yy, xx = np.mgrid[0:h, 0:w]
    px, py = xx + 0.5, yy + 0.5
    inside = np.zeros((h, w), bool)
    n = len(xy)
    for i in range(n):
        x1, y1 = xy[i]
        x2, y2 = xy[(i + 1) % n]
        if y1 == y2:
            continue
        crosses = (py >= min(y1, y2)) & (py < max(y1, y2))
        xc = x1 + (py - y1) * (x2 - x1) / (y2 - y1)
        inside ^= crosses & (px < xc)
    return inside


def distance_to_polygon(xy, h, w):
    """Distance from each pixel centre to the polygon's boundary."""
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    yy, xx = np.mgrid[0:h, 0:w]
    px, py = xx + 0.5, yy + 0.5
    best = np.full((h, w), np.inf)
    n = len(xy)
    for i in range(n):
        a, b = xy[i], xy[(i + 1) % n]
        d = b - a
        ll = float(d @ d)
        t = np.zeros_like(px) if ll == 0 else np.clip(((px - a[0]) * d[0] + (py - a[1]) * d[1]) / ll, 0, 1)
        best = np.minimum(best, np.hypot(px - (a[0] + t * d[0]), py - (a[1] + t * d[1])))
    return best
