#!/usr/bin/env python3
"""Writes deterministic synthetic test images: textured backgrounds with random shapes.

  make_synthetic_images.py --out DIR --n N --seed S [--min-size 64 --max-size 640 --format jpg|png|ppm]
                           [--width W --height H] [--corrupt K]

Images are named img_00000.<fmt> ...; --corrupt K adds K unreadable files bad_00000.jpg ...
(garbage bytes, an empty file, JPEG headers truncated before the image data) for loader tests.
The same arguments always give byte-identical files.
"""
import argparse
import io
import pathlib

import numpy as np
from PIL import Image, ImageDraw


def textured_background(rng, h, w):
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = rng.uniform(0, 255, size=3).astype(np.float32)
    grad = rng.uniform(-120, 120, size=(2, 3)).astype(np.float32)
    img = base + (yy / max(h - 1, 1))[..., None] * grad[0] + (xx / max(w - 1, 1))[..., None] * grad[1]
    fy, fx = rng.uniform(0.02, 0.3, size=2)
    img += 25.0 * np.sin(fy * yy + fx * xx + rng.uniform(0, 6.3))[..., None]
    img += rng.normal(0, 8, size=(h, w, 3)).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def random_colour(rng):
    return tuple(int(c) for c in rng.integers(0, 256, size=3))


def synthetic_image(rng, h, w):
    im = Image.fromarray(textured_background(rng, h, w), "RGB")
    d = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(3, 12))):
        kind = int(rng.integers(0, 3))
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        r = rng.uniform(0.03, 0.3) * min(h, w) + 1
        fill = random_colour(rng)
        outline = random_colour(rng) if rng.uniform() < 0.5 else None
        if kind == 0:
            d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill, outline=outline)
        elif kind == 1:
            rw, rh = r * rng.uniform(0.5, 2), r * rng.uniform(0.5, 2)
            d.rectangle([cx - rw, cy - rh, cx + rw, cy + rh], fill=fill, outline=outline)
        else:
            k = int(rng.integers(3, 8))
            ang = np.sort(rng.uniform(0, 2 * np.pi, size=k))
            rad = r * rng.uniform(0.4, 1.2, size=k)
            d.polygon([(float(cx + a * np.cos(t)), float(cy + a * np.sin(t))) for t, a in zip(ang, rad)],
                      fill=fill, outline=outline)
    return im


def encode(im, fmt):
    buf = io.BytesIO()
    if fmt == "jpg":
        im.save(buf, format="JPEG", quality=90)
    else:
        im.save(buf, format="PNG" if fmt == "png" else "PPM")
    return buf.getvalue()


def corrupt_bytes(rng, k, good_jpeg):
    kind = k % 3
    if kind == 0:
        return rng.integers(0, 256, size=int(rng.integers(16, 4096)), dtype=np.uint8).tobytes()
    if kind == 1:
        return b""
    return good_jpeg[:min(len(good_jpeg), 40 + int(rng.integers(0, 60)))]  # cut inside the headers


def make_images(out, n, seed, min_size=64, max_size=640, fmt="jpg", width=None, height=None, corrupt=0):
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        h = height or int(rng.integers(min_size, max_size + 1))
        w = width or int(rng.integers(min_size, max_size + 1))
        p = out / f"img_{i:05d}.{fmt}"
        p.write_bytes(encode(synthetic_image(rng, h, w), fmt))
        paths.append(p)
    good = encode(synthetic_image(rng, 48, 64), "jpg")
    for k in range(corrupt):
        p = out / f"bad_{k:05d}.jpg"
        p.write_bytes(corrupt_bytes(rng, k, good))
        paths.append(p)
    return paths


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--min-size", type=int, default=64)
    ap.add_argument("--max-size", type=int, default=640)
    ap.add_argument("--width", type=int, default=None, help="fixed width (overrides min/max)")
    ap.add_argument("--height", type=int, default=None, help="fixed height (overrides min/max)")
    ap.add_argument("--format", choices=["jpg", "png", "ppm"], default="jpg")
    ap.add_argument("--corrupt", type=int, default=0)
    a = ap.parse_args()
    paths = make_images(a.out, a.n, a.seed, a.min_size, a.max_size, a.format, a.width, a.height, a.corrupt)
    print(f"wrote {len(paths)} files to {a.out}")


if __name__ == "__main__":
    main()
