#!/usr/bin/env python3
"""Renders a small synthetic COCO-format dataset ("toy world") for the demo and the tests.

  /usr/bin/python3 scripts/make_toy_world.py --out DIR [--seed 0] [--train 600] [--val 100]
                                            [--size-min 160] [--size-max 400] [--no-verify]
                                            [--palette free|category]

Writes DIR/train/*.jpg, DIR/val/*.jpg and DIR/annotations/instances_{train,val}.json.

Images: textured backgrounds (smooth noise, gradients, stripes, checkers, plus pixel noise) of
varied size and aspect (each side uniform in [size-min, size-max]) with 1-6 shapes of the 8
categories below (names = the reference teacher's concept bank entries), varied sizes, colours,
textures and rotations, drawn back to front with occlusion. With --palette category (the demo's
world) a shape's colours are drawn around a hue of its category's own (plain fill, mild gradient,
no stripes), so a small trunk can tell categories apart by colour as well as shape: the reference
teacher's random trunk cannot learn shape recognition in a few CPU minutes, and with free colours its
concept path stayed at ~0.2 IoU. About 1 image in 12 also has a "crowd":
a cluster of small shapes of one category annotated once with iscrowd=1.

Masks are exact: every shape is rasterised from its geometry polygon(s) with scripts/coco_rle.py's port of pycocotools'
rleFrPoly (pixel centres at integer coordinates, vertices snapped to 1/5 px), rings as outer minus
inner polygon. A shape's annotation is its visible mask (its mask minus everything drawn later),
and the pixels of the image inside that mask are the shape's own. Segmentations:
- unoccluded shapes whose polygon lies inside the image: the geometry polygon (decodes exactly);
- occluded or border-clipped shapes: one polygon per 4-connected visible component, traced along
  pixel edges (vertices at half-integers, so rleFrPoly reproduces the mask exactly);
- rings, visible masks with holes, and ~15% of the rest: compressed RLE strings (COCO codec);
- crowds: iscrowd=1 with uncompressed RLE {"size": [h, w], "counts": [...]}.
bbox = tight box of the visible mask [x, y, w, h]; area = its pixel count. --verify (default) decodes
every written segmentation and checks it equals the composed mask pixel for pixel.
The same arguments give byte-identical output.
"""
import argparse
import io
import json
import math
import pathlib
import sys
import time

import numpy as np
from PIL import Image
from scipy import ndimage

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import coco_rle  # noqa: E402  (COCO RLE codecs with pycocotools semantics)

CATEGORIES = ["circle", "square", "triangle", "star", "ring", "cross", "ellipse", "hexagon"]


def poly_to_mask(xy, h, w):
    """pycocotools rleFrPoly: polygon [x1,y1,x2,y2,...] -> bool (h, w) mask."""
    return coco_rle.fr_poly_mask(xy, h, w).astype(bool)


def decode_segmentation(seg, h, w):
    """Any COCO segmentation (polygon list, compressed or uncompressed RLE) -> bool (h, w)."""
    return coco_rle.mask(seg, h, w)


# ------------------------------------------------------------------------------------------------
# Tracing a visible mask into exact polygons
# ------------------------------------------------------------------------------------------------
_DIRS = {(1, 0): 0, (0, 1): 1, (-1, 0): 2, (0, -1): 3}


def trace_component(comp):
    """Outer boundary of a 4-connected, hole-free component along pixel edges, as COCO polygon
    coordinates (corner (X, Y) -> (X - 0.5, Y - 0.5)); collinear vertices dropped."""
    p = np.pad(comp, 1)
    c = p[1:-1, 1:-1]
    nxt = {}

    def add(cond, sx, sy, ex, ey):
        ys, xs = np.nonzero(cond)
        for yy, xx in zip(ys.tolist(), xs.tolist()):
            nxt.setdefault((xx + sx, yy + sy), []).append((xx + ex, yy + ey))

    add(c & ~p[:-2, 1:-1], 0, 0, 1, 0)   # top edge, left -> right
    add(c & ~p[1:-1, 2:], 1, 0, 1, 1)    # right edge, top -> bottom
    add(c & ~p[2:, 1:-1], 1, 1, 0, 1)    # bottom edge, right -> left
    add(c & ~p[1:-1, :-2], 0, 1, 0, 0)   # left edge, bottom -> top
    ys, xs = np.nonzero(comp)
    i = np.lexsort((xs, ys))[0]
    start = (int(xs[i]), int(ys[i]))
    pts, cur, prev_dir = [start], start, 0
    while True:
        cands = nxt[cur]
        if len(cands) > 1:  # pinch: prefer the right-most turn relative to the incoming direction
            cands.sort(key=lambda e: (_DIRS[(e[0] - cur[0], e[1] - cur[1])] - prev_dir - 1) % 4)
        e = cands.pop(0)
        prev_dir = _DIRS[(e[0] - cur[0], e[1] - cur[1])]
        cur = e
        if cur == start:
            break
        pts.append(cur)
    pts = np.array(pts, np.float64)
    prv, nx = np.roll(pts, 1, 0), np.roll(pts, -1, 0)
    cross = (pts[:, 0] - prv[:, 0]) * (nx[:, 1] - pts[:, 1]) - (pts[:, 1] - prv[:, 1]) * (nx[:, 0] - pts[:, 0])
    pts = pts[cross != 0] - 0.5
    return [float(v) for v in pts.reshape(-1)]


def mask_to_polygons(mask):
    """Exact polygons for a mask whose 4-connected components have no holes, else None."""
    lab, n = ndimage.label(mask)
    polys = []
    for k in range(1, n + 1):
        comp = lab == k
        if not np.array_equal(ndimage.binary_fill_holes(comp), comp):
            return None
        poly = trace_component(comp)
        if len(poly) < 6:
            return None
        polys.append(poly)
    h, w = mask.shape
    rec = np.zeros_like(mask)
    for poly in polys:
        rec |= poly_to_mask(poly, h, w)
    return polys if np.array_equal(rec, mask) else None


# ------------------------------------------------------------------------------------------------
# Shapes
# ------------------------------------------------------------------------------------------------
def regular(n, r, rot, phase=0.0):
    t = rot + phase + np.arange(n) * 2 * np.pi / n
    return np.stack([r * np.cos(t), r * np.sin(t)], 1)


def shape_polygons(cat, rng, r):
    """Polygons (list of (n,2) arrays around the origin) and whether the 2nd one is a hole."""
    rot = rng.uniform(0, 2 * np.pi)
    if cat == "circle":
        return [regular(48, r, 0.0)], False
    if cat == "ring":
        return [regular(48, r, 0.0), regular(40, r * rng.uniform(0.45, 0.7), 0.0)], True
    if cat == "ellipse":
        a, b = r, r * rng.uniform(0.35, 0.7)
        t = np.arange(48) * 2 * np.pi / 48
        e = np.stack([a * np.cos(t), b * np.sin(t)], 1)
        R = np.array([[np.cos(rot), -np.sin(rot)], [np.sin(rot), np.cos(rot)]])
        return [e @ R.T], False
    if cat == "square":
        return [regular(4, r, rot)], False
    if cat == "triangle":
        return [regular(3, r * 1.15, rot)], False
    if cat == "hexagon":
        return [regular(6, r, rot)], False
    if cat == "star":
        outer, inner = regular(5, r * 1.1, rot), regular(5, r * 1.1 * rng.uniform(0.38, 0.5), rot, np.pi / 5)
        return [np.stack([outer, inner], 1).reshape(-1, 2)], False
    if cat == "cross":
        a = r * rng.uniform(0.28, 0.42)
        base = np.array([[a, -a], [r, -a], [r, a], [a, a], [a, r], [-a, r], [-a, a], [-r, a], [-r, -a],
                         [-a, -a], [-a, -r], [a, -r]], np.float64)
        R = np.array([[np.cos(rot), -np.sin(rot)], [np.sin(rot), np.cos(rot)]])
        return [base @ R.T], False
    raise KeyError(cat)


def render_shape(cat, rng, cx, cy, r, h, w):
    polys, hole = shape_polygons(cat, rng, r)
    polys = [np.round((p + [cx, cy]) * 100) / 100 for p in polys]  # 2-decimal coordinates in the json
    mask = poly_to_mask(polys[0].reshape(-1), h, w)
    if hole:
        mask &= ~poly_to_mask(polys[1].reshape(-1), h, w)
    return mask, polys, hole


# ------------------------------------------------------------------------------------------------
# Textures
# ------------------------------------------------------------------------------------------------
def smooth_noise(rng, h, w, cells):
    g = rng.uniform(-1, 1, (cells + 1, cells + 1, 3)).astype(np.float32)
    im = Image.fromarray(((g + 1) * 127.5).astype(np.uint8), "RGB").resize((w, h), Image.BICUBIC)
    return np.asarray(im, np.float32) / 127.5 - 1


def background(rng, h, w):
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = rng.uniform(30, 225, 3).astype(np.float32)
    kind = int(rng.integers(4))
    if kind == 0:  # smooth noise
        img = base + rng.uniform(20, 70) * smooth_noise(rng, h, w, int(rng.integers(3, 12)))
    elif kind == 1:  # gradient
        grad = rng.uniform(-130, 130, (2, 3)).astype(np.float32)
        img = base + (yy / h - 0.5)[..., None] * grad[0] + (xx / w - 0.5)[..., None] * grad[1]
    elif kind == 2:  # stripes
        other = rng.uniform(30, 225, 3).astype(np.float32)
        th, period = rng.uniform(0, np.pi), rng.uniform(6, 40)
        s = np.sin((np.cos(th) * xx + np.sin(th) * yy) * 2 * np.pi / period)
        s = s if rng.uniform() < 0.5 else np.sign(s)
        img = base + (other - base) * (0.5 + 0.5 * s)[..., None]
    else:  # checker
        other = rng.uniform(30, 225, 3).astype(np.float32)
        cell = rng.uniform(8, 40)
        chk = ((xx // cell + yy // cell) % 2)[..., None]
        img = base * (1 - chk) + other * chk
    img = img + rng.normal(0, rng.uniform(3, 14), (h, w, 3)).astype(np.float32)
    return img


# --palette category: each category's colours are drawn around its own hue (like a real category's
# typical appearance), so a small trunk can recognise categories by colour as well as by shape.
CATEGORY_HUES = {c: k / len(CATEGORIES) for k, c in enumerate(CATEGORIES)}
PALETTE = {"mode": "free"}


def category_colour(rng, cat):
    import colorsys
    hue = (CATEGORY_HUES[cat] + rng.normal(0, 0.02)) % 1.0
    return np.array(colorsys.hsv_to_rgb(hue, rng.uniform(0.55, 1.0), rng.uniform(0.55, 1.0)), np.float32) * 255


def shape_fill(rng, h, w, x0, y0, x1, y1, cat=None):
    """Appearance of a shape on its bounding window: colour + gradient, sometimes stripes."""
    hh, ww = y1 - y0, x1 - x0
    yy, xx = np.mgrid[0:hh, 0:ww].astype(np.float32)
    if PALETTE["mode"] == "category":
        base = category_colour(rng, cat)
        g = rng.uniform(-25, 25, (2, 3)).astype(np.float32)
        img = base + (yy / max(hh, 1) - 0.5)[..., None] * g[0] + (xx / max(ww, 1) - 0.5)[..., None] * g[1]
        return img + rng.normal(0, rng.uniform(2, 8), (hh, ww, 3)).astype(np.float32)
    base = rng.uniform(0, 255, 3).astype(np.float32)
    g = rng.uniform(-60, 60, (2, 3)).astype(np.float32)
    img = base + (yy / max(hh, 1) - 0.5)[..., None] * g[0] + (xx / max(ww, 1) - 0.5)[..., None] * g[1]
    if rng.uniform() < 0.25:
        other = rng.uniform(0, 255, 3).astype(np.float32)
        th, period = rng.uniform(0, np.pi), rng.uniform(4, 14)
        s = (np.sin((np.cos(th) * xx + np.sin(th) * yy) * 2 * np.pi / period) > 0)[..., None]
        img = np.where(s, other, img)
    return img + rng.normal(0, rng.uniform(2, 10), (hh, ww, 3)).astype(np.float32)


def paint(img, mask, rng, cat=None):
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    fill = shape_fill(rng, *img.shape[:2], x0, y0, x1, y1, cat)
    win = mask[y0:y1, x0:x1]
    img[y0:y1, x0:x1][win] = fill[win]


# ------------------------------------------------------------------------------------------------
# Scenes
# ------------------------------------------------------------------------------------------------
MIN_VISIBLE_FRAC = 0.35
MIN_AREA = 40


def make_scene(rng, h, w, crowd_prob=1 / 12):
    """Returns (uint8 image, list of objects). Each object: dict(cat, mask, polys, hole, crowd)."""
    img = background(rng, h, w)
    objs = []  # back to front
    s = min(h, w)
    if rng.uniform() < crowd_prob:
        cat = CATEGORIES[int(rng.integers(len(CATEGORIES)))]
        ccx, ccy = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h
        spread = rng.uniform(0.08, 0.18) * s
        cmask = np.zeros((h, w), bool)
        for _ in range(int(rng.integers(5, 10))):
            r = rng.uniform(0.025, 0.05) * s + 3
            m, _, _ = render_shape(cat, rng, ccx + rng.normal(0, spread), ccy + rng.normal(0, spread), r, h, w)
            paint(img, m, rng, cat)
            cmask |= m
        if cmask.sum() >= MIN_AREA:
            objs.append(dict(cat=cat, mask=cmask, full=cmask.sum(), polys=None, hole=False, crowd=True))
    for _ in range(int(rng.integers(1, 7))):
        cat = CATEGORIES[int(rng.integers(len(CATEGORIES)))]
        for _try in range(25):
            r = rng.uniform(0.07, 0.3) * s + 4
            cx, cy = rng.uniform(0.05, 0.95) * w, rng.uniform(0.05, 0.95) * h
            m, polys, hole = render_shape(cat, rng, cx, cy, r, h, w)
            area = int(m.sum())
            if area < MIN_AREA * 3:
                continue
            ok = all((o["mask"] & ~m).sum() >= max(MIN_VISIBLE_FRAC * o["full"], MIN_AREA) for o in objs)
            if ok:
                break
        else:
            continue
        for o in objs:
            o["mask"] = o["mask"] & ~m
        paint(img, m, rng, cat)
        objs.append(dict(cat=cat, mask=m, full=area, polys=polys, hole=hole, crowd=False))
    return np.clip(np.round(img), 0, 255).astype(np.uint8), objs


def encode_object(o, rng, h, w):
    """COCO segmentation for an object's visible mask (see the module docstring)."""
    m = o["mask"]
    if o["crowd"]:
        return {"size": [h, w], "counts": coco_rle.encode(m)}
    as_rle = o["hole"] or rng.uniform() < 0.15
    if not as_rle:
        p = o["polys"][0]
        inside = p[:, 0].min() >= 0 and p[:, 1].min() >= 0 and p[:, 0].max() <= w - 1 and p[:, 1].max() <= h - 1
        if inside and int(m.sum()) == o["full"]:
            return [[float(v) for v in p.reshape(-1)]]
        polys = mask_to_polygons(m)
        if polys is not None:
            return polys
    return {"size": [h, w], "counts": coco_rle.to_string(coco_rle.encode(m))}


def write_split(out, split, n, seed, size_min, size_max, verify):
    (out / split).mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    bad = 0
    split_key = {"train": 1, "val": 2}[split]
    for i in range(n):
        rng = np.random.default_rng([seed, split_key, i])
        h, w = int(rng.integers(size_min, size_max + 1)), int(rng.integers(size_min, size_max + 1))
        img, objs = make_scene(rng, h, w)
        image_id = i + 1
        name = f"{split}_{i:06d}.jpg"
        buf = io.BytesIO()
        Image.fromarray(img, "RGB").save(buf, format="JPEG", quality=92)
        (out / split / name).write_bytes(buf.getvalue())
        images.append({"id": image_id, "file_name": name, "width": w, "height": h})
        for o in objs:
            m = o["mask"]
            ys, xs = np.nonzero(m)
            if len(ys) == 0:
                continue
            seg = encode_object(o, rng, h, w)
            if verify and not np.array_equal(decode_segmentation(seg, h, w), m):
                bad += 1
            x0, y0 = int(xs.min()), int(ys.min())
            anns.append({"id": len(anns) + 1, "image_id": image_id,
                         "category_id": CATEGORIES.index(o["cat"]) + 1,
                         "bbox": [x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1],
                         "area": int(m.sum()), "iscrowd": int(o["crowd"]), "segmentation": seg})
    coco = {"info": {"description": f"InstinctSAM toy world ({split}, seed {seed})", "version": "1"},
            "images": images, "annotations": anns,
            "categories": [{"id": k + 1, "name": c, "supercategory": "shape"} for k, c in enumerate(CATEGORIES)]}
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    (out / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco, separators=(",", ":")))
    if bad:
        raise SystemExit(f"{split}: {bad} segmentations do not decode to their rendered masks")
    return images, anns


def summary(anns):
    kinds = {"polygon": 0, "multi-polygon": 0, "rle-string": 0, "crowd-rle": 0}
    for a in anns:
        s = a["segmentation"]
        if isinstance(s, list):
            kinds["multi-polygon" if len(s) > 1 else "polygon"] += 1
        elif isinstance(s["counts"], str):
            kinds["rle-string"] += 1
        else:
            kinds["crowd-rle"] += 1
    return " ".join(f"{k}={v}" for k, v in kinds.items())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train", type=int, default=600)
    ap.add_argument("--val", type=int, default=100)
    ap.add_argument("--size-min", type=int, default=160)
    ap.add_argument("--size-max", type=int, default=400)
    ap.add_argument("--no-verify", action="store_true", help="skip decoding every segmentation back")
    ap.add_argument("--palette", choices=("free", "category"), default="free",
                    help="shape colours: any (free) or around a hue of their category's own (category)")
    a = ap.parse_args(argv)
    PALETTE["mode"] = a.palette
    if not 32 <= a.size_min <= a.size_max:
        ap.error("need 32 <= --size-min <= --size-max")
    out = pathlib.Path(a.out)
    t0 = time.time()
    for split, n in (("train", a.train), ("val", a.val)):
        images, anns = write_split(out, split, n, a.seed, a.size_min, a.size_max, not a.no_verify)
        print(f"{split}: {len(images)} images, {len(anns)} annotations ({summary(anns)})", flush=True)
    print(f"toy world -> {out} ({time.time() - t0:.1f}s{'' if a.no_verify else ', all masks verified'})")


if __name__ == "__main__":
    main()
