#!/usr/bin/env python3
"""Fixtures for tests/unit/test_data.cpp (writes under --out, i.e. $INSTINCT_FIXTURES/data/).

resize/  : <case>.png inputs of odd sizes (RGB, grayscale, RGBA; up-, down- and mixed scaling) and
           the independent references, raw little-endian float32 (3,S,S) in [0,1] units:
             <case>.interp.bin = F.interpolate(x/255, bilinear, antialias=True, align_corners=False)
             <case>.tv_uint8.bin = torchvision F.resize(uint8 tensor, antialias=True) / 255
           ("longest_pad": content resized to round-half-up(side*S/longest), zero padded
           bottom/right); cases.json lists them.
images/  : 30 small synthetic JPEG/PNG images (loader tests).
bad/     : 12 synthetic JPEGs + 3 unreadable .jpg files (skip / bad-fraction tests).
"""
import argparse
import json
import pathlib
import sys

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from PIL import Image

here = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(here.parent.parent / "scripts"))
import make_synthetic_images as syn  # noqa: E402

CASES = [  # name, h, w, mode (PIL), resize, S
    ("down_rgb", 37, 53, "RGB", "squash", 16),
    ("up_rgb", 13, 7, "RGB", "squash", 29),
    ("mixed_rgb", 20, 90, "RGB", "squash", 48),
    ("down_big", 101, 67, "RGB", "squash", 32),
    ("same_rgb", 24, 24, "RGB", "squash", 24),
    ("gray_up", 45, 30, "L", "squash", 64),
    ("rgba_down", 31, 40, "RGBA", "squash", 20),
    ("pad_wide", 23, 50, "RGB", "longest_pad", 32),
    ("pad_tall", 61, 17, "RGB", "longest_pad", 40),
    ("pad_up", 9, 14, "RGB", "longest_pad", 33),
]


def test_pixels(rng, h, w, c):
    yy, xx = np.mgrid[0:h, 0:w]
    smooth = 128 + 100 * np.sin(0.4 * yy[..., None] + 0.7 * xx[..., None] + np.arange(c))
    img = smooth + rng.normal(0, 30, size=(h, w, c))
    img[h // 3: h // 2, :] = rng.integers(0, 256, size=c)  # a sharp band
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def target(h, w, resize, s):
    if resize == "squash":
        return s, s
    f = s / max(h, w)
    return min(max(int(np.floor(h * f + 0.5)), 1), s), min(max(int(np.floor(w * f + 0.5)), 1), s)


def write_resize(out):
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1234)
    meta = []
    for name, h, w, mode, resize, s in CASES:
        c = {"RGB": 3, "L": 1, "RGBA": 4}[mode]
        px = test_pixels(rng, h, w, c)
        im = Image.fromarray(px[..., 0] if c == 1 else px, mode)
        im.save(out / f"{name}.png")
        rgb = np.asarray(Image.open(out / f"{name}.png").convert("RGB"))  # what PIL decodes
        oh, ow = target(h, w, resize, s)
        t = torch.from_numpy(rgb.copy()).permute(2, 0, 1).contiguous()
        ref = F.interpolate(t[None].float() / 255, size=(oh, ow), mode="bilinear", align_corners=False,
                            antialias=True)[0]
        tv = TF.resize(t, [oh, ow], interpolation=TF.InterpolationMode.BILINEAR, antialias=True).float() / 255
        for suffix, y in (("interp", ref), ("tv_uint8", tv)):
            full = torch.zeros(3, s, s)
            full[:, :oh, :ow] = y
            full.numpy().astype("<f4").tofile(out / f"{name}.{suffix}.bin")
        meta.append({"name": name, "png": f"{name}.png", "height": h, "width": w, "mode": mode,
                     "resize": resize, "size": s, "out_height": oh, "out_width": ow})
    (out / "cases.json").write_text(json.dumps(meta, indent=1))


def write_ppm(out):
    """PPM inputs (the decoder of INSTINCT_WITH_IMGCODECS=OFF builds): the same 7x5 pixels written by
    PIL, by hand with header comments, and as raw RGB bytes for the expected result."""
    out.mkdir(parents=True, exist_ok=True)
    px = np.random.default_rng(55).integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    Image.fromarray(px, "RGB").save(out / "pil.ppm")
    (out / "comment.ppm").write_bytes(b"P6\n# written by hand\n7 # width\n5\n#maxval next\n255\n" + px.tobytes())
    (out / "pixels.rgb").write_bytes(np.asarray(Image.open(out / "pil.ppm").convert("RGB")).tobytes())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    out = pathlib.Path(ap.parse_args().out)
    write_resize(out / "resize")
    write_ppm(out / "ppm")
    syn.make_images(out / "images", 18, seed=7, min_size=40, max_size=120, fmt="jpg")
    syn.make_images(out / "images" / "sub", 12, seed=8, min_size=40, max_size=120, fmt="png")
    syn.make_images(out / "bad", 12, seed=9, min_size=40, max_size=120, fmt="jpg", corrupt=3)


if __name__ == "__main__":
    main()
