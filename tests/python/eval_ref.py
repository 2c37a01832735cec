#!/usr/bin/env python3
"""Independent Python reference of instinct-eval's model mode (teacher only), for tests/cli/eval_parity.sh.

  /usr/bin/python3 tests/python/eval_ref.py --annotations GT.json --images DIR --bundle NAME=BUNDLE \
      [--bundle NAME2=BUNDLE2 ...] --out ROWS.json [--n-images N] [--threshold 0.5] [--threads 2]

Protocol: the first N images by id (0 = all), one target per image (the largest non-crowd annotation
with area >= 1, ties to the first listed), point = GT-mask centroid (box centre if empty), concept
threshold 0.5. Written from the contracts in docs/teacher-bundle.md and docs/evaluation.md with Python
torch + torch.jit.load of the bundle's TorchScript files, all evaluated images in one batch (the C++ tool uses batches of 4):
- image: PIL open + convert("RGB");
- preprocess: "squash" = antialiased bilinear resize to S x S; "longest_pad" = longest side to S, the
  other round(side * S / longest) half up, content top-left; round to uint8 (torch.round, half to even),
  clamp, /255, (x - mean) / std; padding is 0 in normalised space;
- trunk -> detector_neck / interactive_neck;
- box prompt: GT bbox xywh -> xyxy as two corners (labels 2, 3); point prompt: the centroid (label 1);
  both scaled by (content width / image width, content height / image height); sam_head -> the
  multimask output with the highest predicted IoU, its IoU is the score;
- concept prompt: concept_bank(index of the category name in bundle.json's concepts) -> grounding ->
  score = sigmoid(logit) * sigmoid(presence) per query, top query, kept when score >= threshold;
- masks: squash: bilinear (align_corners=False) upsampling of the M x M logits to (h, w), > 0;
  longest_pad: upsample to S x S, crop the content [0:ch, 0:cw], upsample to (h, w), > 0.

Output: a JSON object {NAME: list of rows}, a row being {image_id, annotation_id, category_id, prompt, score, kept, iou,
in_bank, counts (uncompressed COCO RLE of the prediction, empty when not kept), top_counts (concept:
the top query's mask even when it is not kept)}.
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts"))
import coco_rle  # noqa: E402


def content_size(h, w, S, resize):
    """(ch, cw): the resized content inside the S x S network input."""
    if resize == "squash":
        return S, S
    assert resize == "longest_pad", resize
    longest = max(h, w)

    def side(v):
        # round half up of v * S / longest, exact in rationals (v * S and longest are integers)
        return min(max((2 * v * S + longest) // (2 * longest), 1), S)

    return side(h), side(w)


def preprocess(path, info):
    """-> (pixels (1,3,S,S) float32, h, w, ch, cw)."""
    S = int(info["image_size"])
    rgb = np.asarray(Image.open(path).convert("RGB"))
    h, w = rgb.shape[:2]
    ch, cw = content_size(h, w, S, info["resize"])
    x = torch.from_numpy(rgb.copy()).permute(2, 0, 1).unsqueeze(0).to(torch.float32)  # 0..255
    x = F.interpolate(x, size=(ch, cw), mode="bilinear", align_corners=False, antialias=True)
    x = torch.round(x).clamp(0, 255) / 255.0
    mean = torch.tensor(info["pixel_mean"], dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(info["pixel_std"], dtype=torch.float32).view(1, 3, 1, 1)
    x = (x - mean) / std
    pixels = torch.zeros(1, 3, S, S, dtype=torch.float32)
    pixels[:, :, :ch, :cw] = x
    return pixels, h, w, ch, cw


def logits_to_mask(logits, h, w, ch, cw, S, resize):
    """(M, M) logits over the network input -> bool (h, w) mask at the original size."""
    x = logits.to(torch.float32).reshape(1, 1, *logits.shape[-2:])
    if resize == "longest_pad":
        x = F.interpolate(x, size=(S, S), mode="bilinear", align_corners=False)[:, :, :ch, :cw]
    x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
    return (x[0, 0] > 0).numpy()


def tup(out):
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def pick_target(anns):
    """The largest non-crowd annotation with area >= 1 (ties: the first listed), or None."""
    best = None
    for a in anns:
        if a.get("iscrowd", 0) or a["area"] < 1:
            continue
        if best is None or a["area"] > best["area"]:
            best = a
    return best


def mask_iou(p, g):
    inter = np.logical_and(p, g).sum()
    union = np.logical_or(p, g).sum()
    return float(inter) / float(union) if union else 0.0


def run(annotations, images, bundle, n_images=0, threshold=0.5):
    gt = json.load(open(annotations))
    info = json.load(open(os.path.join(bundle, "bundle.json")))
    S, resize = int(info["image_size"]), info["resize"]
    mods = {k: torch.jit.load(os.path.join(bundle, v["file"]), map_location="cpu").eval()
            for k, v in info["modules"].items()}
    cat_name = {c["id"]: c["name"] for c in gt["categories"]}
    concepts = list(info["concepts"])
    by_image = {}
    for a in gt["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    imgs = sorted(gt["images"], key=lambda im: im["id"])
    if n_images > 0:
        imgs = imgs[:n_images]
    # Per evaluated image: its target and geometry (missing images and images without a target drop out).
    items, pixels = [], []
    for im in imgs:
        path = os.path.join(images, im["file_name"])
        if not os.path.exists(path):
            continue
        t = pick_target(by_image.get(im["id"], []))
        if t is None:
            continue
        px, h, w, ch, cw = preprocess(path, info)
        assert (h, w) == (im["height"], im["width"]), (path, h, w)
        g = coco_rle.decode(coco_rle.segmentation(t["segmentation"], h, w), h, w).astype(bool)
        bx, by, bw, bh = t["bbox"]
        box = [bx, by, bx + bw, by + bh]
        ys, xs = np.nonzero(g)
        if len(xs):
            centroid = [float(xs.astype(np.float64).mean()), float(ys.astype(np.float64).mean())]
        else:
            centroid = [(box[0] + box[2]) / 2, (box[1] + box[3]) / 2]
        sx, sy = cw / w, ch / h
        name = cat_name[t["category_id"]]
        items.append(dict(im=im, t=t, h=h, w=w, ch=ch, cw=cw, gt=g, in_bank=name in concepts,
                          cid=concepts.index(name) if name in concepts else 0,
                          box=[[box[0] * sx, box[1] * sy], [box[2] * sx, box[3] * sy]],
                          point=[[centroid[0] * sx, centroid[1] * sy]]))
        pixels.append(px)
    rows = []
    if not items:
        return rows
    with torch.no_grad():
        # One batch through the trunk and necks (the images are few; every module is batch-independent).
        feats = tup(mods["trunk"](torch.cat(pixels)))[0]
        fpn0, fpn1, fpn2 = tup(mods["detector_neck"](feats))[:3]
        emb, s0, s1 = tup(mods["interactive_neck"](feats))[:3]
        # concept: the category name through the concept bank and grounding; top query by score
        ids = torch.tensor([it["cid"] for it in items], dtype=torch.int64)
        text, pad = tup(mods["concept_bank"](ids))[:2]
        gout = tup(mods["grounding"](fpn0, fpn1, fpn2, text, pad))
        qscore = torch.sigmoid(gout[0][:, :, 0]) * torch.sigmoid(gout[3][:, 0:1])  # (B,Q)
        qmasks = gout[2]
        # box / point: the multimask output with the highest predicted IoU
        sam = {}
        for kind, lbl in (("box", [2, 3]), ("point", [1])):
            pts = torch.tensor([it[kind] for it in items], dtype=torch.float64).to(torch.float32)
            labels = torch.tensor([lbl] * len(items), dtype=torch.int64)
            sam[kind] = tup(mods["sam_head"](emb, s0, s1, pts, labels))[:2]
    for b, it in enumerate(items):
        h, w, ch, cw = it["h"], it["w"], it["ch"], it["cw"]
        base = {"image_id": it["im"]["id"], "annotation_id": it["t"]["id"], "category_id": it["t"]["category_id"]}

        def emit(prompt, score, kept, top_mask, in_bank=True):
            pred = top_mask if kept else np.zeros((h, w), bool)
            rows.append(dict(base, prompt=prompt, score=float(score), kept=bool(kept),
                             iou=mask_iou(pred, it["gt"]), in_bank=in_bank,
                             counts=coco_rle.encode(pred), top_counts=coco_rle.encode(top_mask)))

        q = int(torch.argmax(qscore[b]))
        sc = float(qscore[b, q])
        emit("concept", sc, it["in_bank"] and sc >= threshold,
             logits_to_mask(qmasks[b, q], h, w, ch, cw, S, resize), it["in_bank"])
        for kind in ("box", "point"):
            masks, ious = sam[kind]
            k = int(torch.argmax(ious[b]))
            emit(kind, float(ious[b, k]), True, logits_to_mask(masks[b, k], h, w, ch, cw, S, resize))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--annotations", required=True)
    ap.add_argument("--images", required=True)
    ap.add_argument("--bundle", action="append", required=True, metavar="NAME=DIR",
                    help="a teacher bundle (repeatable); its rows are written under NAME")
    ap.add_argument("--out", required=True, help="JSON file {NAME: [rows]}")
    ap.add_argument("--n-images", type=int, default=0)
    ap.add_argument("--threshold", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    out = {}
    # The profiling executor's first calls re-optimise the graphs: slower for a handful of calls.
    with torch.jit.optimized_execution(False):
        for spec in a.bundle:
            name, _, path = spec.partition("=")
            out[name] = run(a.annotations, a.images, path, a.n_images, a.threshold)
    with open(a.out, "w") as f:
        json.dump(out, f)
    print("eval_ref: " + ", ".join(f"{k} {len(v)} rows" for k, v in out.items()))


if __name__ == "__main__":
    main()
