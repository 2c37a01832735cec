#!/usr/bin/env python3
"""Trains the reference teacher's heads on a toy world so its concept and point/box outputs mean
something, and writes it as an instinct teacher bundle.

  /usr/bin/python3 scripts/train_reference_teacher.py --world DIR --out BUNDLE_DIR [--seed 0]
                                                      [--steps 1000] [--threads 2] [--jobs 2]

DIR is a toy world from scripts/make_toy_world.py (COCO format). The model is
make_reference_teacher.build(preset, seed): same architecture and bundle contract; the bundle is
written with its write_bundle (traced modules, reload checks, bundle.json with SHA-256s).

What is trained: the two necks' scale-2 and scale-1 stacks (plus conv_s0/conv_s1/no_mem_embed),
grounding and the SAM head. The trunk stays the seeded random reference trunk (so Stage A
distillation behaves exactly as with make_reference_teacher.py), and the trunk and the two scale-4
(M x M) neck stacks stay frozen so their outputs are computed once per image and cached (the 64x64
3x3 convolutions dominate the step cost on a CPU). Preprocessing is the bundle's: squash resize to S
(bilinear, antialias, rounded to uint8, like instinct's loader), scale to [0,1], mean = std = 0.5.

Losses per step (--batch-images B, --pairs concept pairs and two interactive prompts per image):
- concept grounding, per (image, concept) pair: Hungarian matching of the Q queries to the GT
  instances of that category (cost 2*class + 5*L1 + 2*(1-GIoU), scipy linear_sum_assignment);
  BCE on all class logits (1 for matched queries), L1 + GIoU on matched boxes (cxcywh in [0,1]),
  BCE + --dice-weight (5) x dice on matched masks at M x M, BCE on presence. --p-pos (0.5) of the
  pairs are present concepts; the others are absent, whose targets are all zero: --p-hard (1) of
  them hard negatives (categories the world's images contain, as instinct-eval's cgF1 draws them),
  the rest any bank name absent from the image (0.8 until 2026-12-03). Matched (positive) class logits are
  weighted --pos-weight (3), the presence loss --pres-weight (3), and --score-weight (4) adds a BCE
  of the protocol's decision score max_q sigmoid(logit_q) * sigmoid(presence) against presence: it
  lifts only the top query of a present concept over 0.5 (no duplicates) and holds absent concepts
  under it. Two dense auxiliary terms make every query's mask useful, since the protocol takes the
  mask of whichever query scores highest: --o2m (1) one-to-many box + mask loss, each unmatched query
  of a present pair regressing to its lowest-cost instance (class targets stay one-to-one), and
  --neg-masks (1) BCE pushing all masks of absent-concept pairs to empty. Grounding trains at
  --ground-lr-mult (2) times the rate (4 made the concept masks collapse to empty).
  Measured on the demo's 600/100 category-palette world (--threads 1, 600 steps unless said;
  cgF1 = pmF1 x IL_MCC from the diagnostic below): positives x8 + score x2 gave cgF1 0.224 with 1.72
  detections per instance (duplicates over the 0.5 threshold); positives x4 0.268 (1.07 per
  instance, but 49 of 262 present concepts missed); positives x4 + score x4 0.278 (29 missed);
  adding dice x8 0.220; score x6 + presence x5 at 800 steps 0.275; positives x4 + score x4 at 800
  steps 0.302 (concept IoU 0.668, box 0.808, point 0.614). The mask quality at high IoU thresholds
  is what limits pmF1 (0.60 at IoU 0.5, 0.02 at 0.95: M x M masks over a random trunk) and it still
  rises with steps, hence the 1000-step default. Samples per step matter as much: --batch-images 4
  for 800 steps (about 0.6 of the time) fell to cgF1 0.092 and concept IoU 0.36. With the heads
  clipped apart (below; --threads 2, AVX2 kernels) positives x4 put 1.23 detections per instance over
  the threshold (cgF1 0.314 here, 0.292 in instinct-eval), positives x3 0.96 (0.335; 0.312 in
  instinct-eval, concept IoU 0.697): hence x3. Duplicates swing from run to run; watch them first.
  The demo's teacher since 2026-12-03 (depthwise-separable finest decoder level, --p-hard 1, the
  diagnostic counting as instinct-eval does): cgF1 0.307, concept IoU 0.673, box 0.814, point 0.627,
  0.97 detections per instance.
- SAM head: --sam-prompts positive points (GT mask centroid, or a random interior point; one point
  token, as at evaluation) and as many GT boxes as two corners (labels 2/3, mildly jittered) per
  image; BCE + dice on the best of the 3 masks, MSE of the predicted IoUs against the masks' actual
  IoUs, BCE of the object score (target 1). The SAM head trains at --sam-lr-mult times the rate.
  With --prompt-maps 1 (default) the SAM head is PromptMapSamHead: the reference head plus dense
  prompt maps (point bumps, inside-box map) added to its image features; same inputs and outputs,
  so the bundle contract is unchanged. Without them the head ignored its prompt (one mask per image).
  --p-centroid (0.5) of the point prompts are the centroid, the rest random interior points.

The two heads (with their necks) share no parameter; each has its own gradient-norm clip (1.0) and
the interactive prompts their own random stream, so either head's training is the same whether the
other trains or not (--parts sam / grounding trains one alone, for recipe experiments). One clip over
both, as before, let the grounding gradients set the SAM head's clip factor; with it the 1000 steps
gave SAM mask loss 0.294 in the 12th epoch and point mIoU 0.574, with its own clip (and stream) 0.257
and 0.633 (box 0.826 and 0.817); one run each, so part of that gap can be the draw.

Each batch is two shards of --batch-images / 2 images whose losses are sums divided by the whole
batch's counts (pairs, matched queries, prompts: known from the sampled targets before any forward),
so they add up to the batch's loss above. --jobs 2 (default) computes the shards in two processes
of --threads / 2 threads each and sums their gradients through torch.distributed (gloo, loopback)
before each step: bit for bit what --jobs 1 computes with that many threads, in about 0.6 of the
time of one process on 2 threads (docs/performance.md: the heads' ops are small, so a second thread
in one process gained the grounding step ~10% and slowed the SAM head's). OpenBLAS's thread count
is pinned to each process's thread count, as its results depend on it.

Training runs for --minutes of wall time in all (data preparation included; ~25 s are reserved for
the final evaluation and bundle writing) or exactly --steps steps; the learning rate follows a
warmup + cosine schedule over that budget. At the end it evaluates the first 100 val images with
the protocol of shared/reference/evaluation.md (largest non-crowd annotation per image; box prompt =
GT box, point prompt = GT-mask centroid, single best mask by predicted IoU; concept prompt = the
category name, top query with sigmoid(logit) * sigmoid(presence) >= 0.5 else an empty mask; masks
bilinearly upsampled to the original size, logits > 0; IoU with an empty union = 0), prints the mean
IoUs, then a concept diagnostics line (the top query's IoU without the 0.5 threshold, the best
IoU over all queries, the mean top score for the present category, and for one absent category
per image the mean top score and how often it reaches 0.5), then cgF1 as instinct-eval computes it
(pmF1 per IoU threshold, image-level counts, detections per instance; the absent categories are
the ones instinct-eval draws, so the counts are its own), and writes all of them with the loss
history to BUNDLE_DIR/train_log.json. Until 2026-12-03 the diagnostic drew its absent categories from
the whole concept bank, whose never-present names are easy negatives: it ran 0.02-0.04 above
instinct-eval's cgF1.
"""
import argparse
import ctypes
import json
import math
import os
import pathlib
import subprocess
import sys
import tempfile
import time

# Passive OpenMP waiting: on a shared 2-core machine, spinning worker threads made every op 3-5x
# slower (same finding as instinct-train). Must be set before torch loads its OpenMP runtime.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from scipy.optimize import linear_sum_assignment
from torchvision.ops import generalized_box_iou

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import make_reference_teacher as mrt  # noqa: E402
import make_toy_world as tw  # noqa: E402


# ------------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------------
def preprocess(img_u8, S):
    """uint8 (H,W,3) -> uint8 (3,S,S): squash resize, antialiased bilinear, rounded (instinct loader)."""
    x = torch.from_numpy(np.array(img_u8)).permute(2, 0, 1)[None].float()
    x = F.interpolate(x, size=(S, S), mode="bilinear", antialias=True, align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8)[0]


def normalise(x_u8):
    return (x_u8.float() / 255.0 - 0.5) / 0.5


def resize_mask(m, M):
    t = torch.from_numpy(m.astype(np.float32))[None, None]
    return F.interpolate(t, size=(M, M), mode="bilinear", antialias=True, align_corners=False)[0, 0]


M64 = (1 << 64) - 1


def cgf1_absent_draw(image_id, cat_ids, annotated, cat_name, n=2, seed=0):
    """The absent categories instinct-eval's cgF1 prompts for this image (src/eval/cgf1.cpp,
    cgf1_categories): the annotation file's categories (ascending id) with no annotation in the image,
    partially shuffled by splitmix64 seeded with seed * 0x100000001b3 ^ image id; the first n, as
    concept-bank indices."""
    absent = [c for c in cat_ids if c not in annotated and cat_name[c] in mrt.CONCEPTS]
    st = (seed * 0x100000001B3 ^ image_id) & M64
    for i in range(min(n, len(absent))):
        st = (st + 0x9E3779B97F4A7C15) & M64
        z = ((st ^ (st >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        j = i + (z ^ (z >> 31)) % (len(absent) - i)
        absent[i], absent[j] = absent[j], absent[i]
    return [mrt.CONCEPTS.index(cat_name[c]) for c in absent[:n]]


def load_split(world, split, S, M, limit=None, keep_full=False):
    coco = json.loads((world / "annotations" / f"instances_{split}.json").read_text())
    cat_name = {c["id"]: c["name"] for c in coco["categories"]}
    images = sorted(coco["images"], key=lambda im: im["id"])[:limit]
    by_img = {}
    for a in coco["annotations"]:
        by_img.setdefault(a["image_id"], []).append(a)
    out = []
    for im in images:
        h, w = im["height"], im["width"]
        arr = np.asarray(Image.open(world / split / im["file_name"]).convert("RGB"))
        assert arr.shape[:2] == (h, w), im["file_name"]
        rec = {"id": im["id"], "h": h, "w": w, "pix": preprocess(arr, S), "inst": [], "crowd_cats": set(),
               "cgf1_absent": cgf1_absent_draw(im["id"], sorted(cat_name), {a["category_id"] for a in by_img.get(im["id"], [])},
                                               cat_name)}
        for a in sorted(by_img.get(im["id"], []), key=lambda a: a["id"]):
            cid = mrt.CONCEPTS.index(cat_name[a["category_id"]])
            if a["iscrowd"]:
                rec["crowd_cats"].add(cid)
                continue
            m = tw.decode_segmentation(a["segmentation"], h, w)
            if not m.any():
                continue
            x, y, bw, bh = a["bbox"]
            ys, xs = np.nonzero(m)
            inst = {"cat": cid, "area": int(m.sum()), "ann_id": a["id"],
                    "box": torch.tensor([(x + bw / 2) / w, (y + bh / 2) / h, bw / w, bh / h]),
                    "box_px": (x, y, x + bw, y + bh),
                    "centroid": (xs.mean(), ys.mean()),
                    "mask_lr": resize_mask(m, M)}
            if keep_full:
                inst["mask"] = m
            rec["inst"].append(inst)
        out.append(rec)
    return out


@torch.no_grad()
def cache_features(mods, recs, bs=16, rank=-1):
    """Frozen parts, computed once per image: trunk features, and the scale-4 (M x M) neck stacks
    (detector fpn0, interactive level 0) stored as float16. With rank 0/1 (--jobs 2) each process
    computes half of the batches, the same batches as one process would, and the halves are
    exchanged: the cache has the same bits either way."""
    starts = list(range(0, len(recs), bs))
    split = (len(starts) + 1) // 2 if rank >= 0 and len(starts) > 1 else len(starts)
    mine = starts[:split] if rank <= 0 else starts[split:]
    feats, fpn0, l0 = [], [], []
    for i in mine:
        f = mods["trunk"](normalise(torch.stack([r["pix"] for r in recs[i:i + bs]])))
        feats.append(f)
        fpn0.append(mods["detector_neck"].convs[0](f).half())
        l0.append(mods["interactive_neck"].sam2_convs[0](f).half())
    own = [torch.cat(x) for x in (feats, fpn0, l0)]
    if rank < 0 or split == len(starts):
        return tuple(own)
    sizes = (min(split * bs, len(recs)), len(recs) - min(split * bs, len(recs)))
    out = []
    for t in own:
        parts = [t if r == rank else t.new_empty((sizes[r],) + t.shape[1:]) for r in (0, 1)]
        for r in (0, 1):
            dist.broadcast(parts[r], src=r)
        out.append(torch.cat(parts))
    return tuple(out)


def detector_neck_cached(neck, f, fpn0):
    return fpn0.float(), neck.convs[1](f), neck.convs[2](f)


def interactive_neck_cached(neck, f, l0):
    l1, l2 = neck.sam2_convs[1](f), neck.sam2_convs[2](f)
    return l2 + neck.no_mem_embed, neck.conv_s0(l0.float()), neck.conv_s1(l1)


# ------------------------------------------------------------------------------------------------
# SAM head with explicit dense prompt maps
# ------------------------------------------------------------------------------------------------
class PromptMapSamHead(mrt.SamHead):
    """mrt.SamHead plus dense prompt maps added to the image embedding (G x G) and to the upsampled
    features (4G x 4G): a Gaussian bump per positive / negative point and a soft inside-the-box map
    from the label-2/3 corners. Same inputs and outputs (the bundle contract is unchanged); with the
    random head alone, the masks did not depend on the prompt (same mask for every point of an
    image), and the one-layer two-way transformer did not learn to route the point's Fourier
    position into the image features within a few CPU minutes."""

    def add_prompt_maps(self, D, G):
        # Pixel-centre coordinates (input pixels) of the G x G and 4G x 4G grids, as buffers so the
        # traced forward creates no tensor on a fixed device.
        for name, n in (("pm_c_lo", G), ("pm_c_hi", 4 * G)):
            self.register_buffer(name, (torch.arange(n, dtype=torch.float32) + 0.5) * (self.S / n))
        self.pmap_lo = nn.Conv2d(3, D, 1)
        self.pmap_hi = nn.Conv2d(3, D // 8, 1)
        with torch.no_grad():
            self.pmap_lo.weight.normal_(0, 1.0)
            self.pmap_lo.bias.zero_()
            self.pmap_hi.weight.normal_(0, 1.0)
            self.pmap_hi.bias.zero_()

    def _maps(self, points, labels, c):
        """(B, 3, n, n) for grid centres c (n,): positive-point bumps, negative-point bumps, box map."""
        S, n = self.S, c.shape[0]
        px, py = points[..., 0], points[..., 1]  # (B, N)
        dx = c[None, None, :] - px[..., None]  # (B, N, n)
        dy = c[None, None, :] - py[..., None]
        sig = S / 16.0
        bump = torch.exp(-(dy[..., :, None] ** 2 + dx[..., None, :] ** 2) / (2 * sig * sig))  # (B,N,n,n)
        pos = (labels == 1).to(points.dtype)[..., None, None]
        neg = (labels == 0).to(points.dtype)[..., None, None]
        m_pos = (bump * pos).sum(1).clamp(max=1.0)
        m_neg = (bump * neg).sum(1).clamp(max=1.0)
        is2 = (labels == 2).to(points.dtype)
        is3 = (labels == 3).to(points.dtype)
        has = (is2.sum(1) > 0).to(points.dtype) * (is3.sum(1) > 0).to(points.dtype)  # (B,)
        c2 = (points * is2[..., None]).sum(1) / is2.sum(1).clamp(min=1.0)[..., None]  # (B, 2)
        c3 = (points * is3[..., None]).sum(1) / is3.sum(1).clamp(min=1.0)[..., None]
        lo, hi = torch.minimum(c2, c3), torch.maximum(c2, c3)
        tau = S / (4.0 * n)
        ix = torch.sigmoid((c[None] - lo[:, :1]) / tau) * torch.sigmoid((hi[:, :1] - c[None]) / tau)  # (B, n)
        iy = torch.sigmoid((c[None] - lo[:, 1:]) / tau) * torch.sigmoid((hi[:, 1:] - c[None]) / tau)
        box = iy[:, :, None] * ix[:, None, :] * has[:, None, None]
        return torch.stack([m_pos, m_neg, box], dim=1)

    def _dense_prompt_lo(self, emb, points, labels):
        return emb + self.pmap_lo(self._maps(points, labels, self.pm_c_lo))

    def _dense_prompt_hi(self, up, points, labels):
        return up + self.pmap_hi(self._maps(points, labels, self.pm_c_hi))


# ------------------------------------------------------------------------------------------------
# Losses
# ------------------------------------------------------------------------------------------------
def cxcywh_to_xyxy(b):
    cx, cy, w, h = b.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)


def dice_loss(logits, target):
    p = logits.sigmoid().flatten(1)
    t = target.flatten(1)
    return 1 - (2 * (p * t).sum(1) + 1) / (p.sum(1) + t.sum(1) + 1)


@torch.no_grad()
def hungarian(logits, boxes, tgt_boxes):
    """logits (Q,), boxes (Q,4), tgt_boxes (T,4) -> (query idx, target idx)."""
    p = logits.sigmoid()
    alpha, gamma = 0.25, 2.0
    pos = alpha * (1 - p) ** gamma * -(p + 1e-8).log()
    neg = (1 - alpha) * p ** gamma * -(1 - p + 1e-8).log()
    c_cls = (pos - neg)[:, None]
    c_l1 = torch.cdist(boxes, tgt_boxes, p=1)
    c_giou = -generalized_box_iou(cxcywh_to_xyxy(boxes), cxcywh_to_xyxy(tgt_boxes))
    cost = 2 * c_cls + 5 * c_l1 + 2 * c_giou
    qi, ti = linear_sum_assignment(cost.numpy())
    return torch.as_tensor(qi, dtype=torch.long), torch.as_tensor(ti, dtype=torch.long), cost


def box_mask_terms(mb, tb, mm, tm, n):
    """Summed L1, 1-GIoU, mask BCE, dice of matched (box, mask) pairs, divided by n."""
    l_l1 = (mb - tb).abs().sum() / n
    l_giou = (1 - torch.diag(generalized_box_iou(cxcywh_to_xyxy(mb), cxcywh_to_xyxy(tb)))).sum() / n
    l_bce = F.binary_cross_entropy_with_logits(mm, tm, reduction="none").mean((1, 2)).sum() / n
    l_dice = dice_loss(mm, tm).sum() / n
    return l_l1, l_giou, l_bce, l_dice


def batch_counts(targets, Q):
    """The normalisers of grounding_loss for a list of per-pair instance lists: pairs, absent pairs,
    Hungarian-matched queries and the rest of the present pairs' queries (one-to-many)."""
    matched = sum(min(len(t), Q) for t in targets)
    present = sum(1 for t in targets if t)
    return {"P": len(targets), "absent": len(targets) - present, "n": matched, "no": present * Q - matched}


def grounding_loss(out, targets, pos_weight=3.0, pres_weight=3.0, o2m=1.0, dice_weight=5.0, neg_masks=1.0,
                   score_weight=4.0, counts=None):
    """out: grounding outputs for P pairs; targets: list of P lists of instances. Every term is a sum
    divided by a count of the whole batch (counts, from batch_counts; default: these pairs'), so the
    losses of a batch's shards add up to the batch's loss."""
    logits, boxes, masks, presence = out[0][..., 0], out[1], out[2], out[3][:, 0]
    cnt = counts or batch_counts(targets, logits.shape[1])
    P = cnt["P"]
    cls_t = torch.zeros_like(logits)
    pres_t = torch.tensor([float(len(t) > 0) for t in targets])
    mb, tb, mm, tm = [], [], [], []
    ob, otb, om, otm = [], [], [], []
    for i, tg in enumerate(targets):
        if not tg:
            continue
        tboxes = torch.stack([t["box"] for t in tg])
        tmasks = torch.stack([t["mask_lr"] for t in tg])
        qi, ti, cost = hungarian(logits[i].detach(), boxes[i].detach(), tboxes)
        cls_t[i, qi] = 1.0
        mb.append(boxes[i, qi])
        tb.append(tboxes[ti])
        mm.append(masks[i, qi])
        tm.append(tmasks[ti])
        if o2m > 0:  # every unmatched query: box and mask of its lowest-cost instance
            rest = torch.ones(logits.shape[1], dtype=torch.bool)
            rest[qi] = False
            rq = rest.nonzero()[:, 0]
            rt = cost[rq].argmin(1)
            ob.append(boxes[i, rq])
            otb.append(tboxes[rt])
            om.append(masks[i, rq])
            otm.append(tmasks[rt])
    n = max(cnt["n"], 1)
    l_cls = F.binary_cross_entropy_with_logits(logits, cls_t, reduction="none")
    l_cls = (l_cls * (1 + (pos_weight - 1) * cls_t)).sum() / max(P, 1) / 2
    l_pres = F.binary_cross_entropy_with_logits(presence, pres_t, reduction="sum") / P
    if mb:
        l_l1, l_giou, l_bce, l_dice = box_mask_terms(torch.cat(mb), torch.cat(tb), torch.cat(mm), torch.cat(tm), n)
    else:
        l_l1 = l_giou = l_bce = l_dice = logits.sum() * 0
    parts = {"cls": l_cls, "pres": l_pres, "l1": l_l1, "giou": l_giou, "mbce": l_bce, "dice": l_dice}
    total = 2 * l_cls + pres_weight * l_pres + 5 * l_l1 + 2 * l_giou + 5 * l_bce + dice_weight * l_dice
    if score_weight > 0:  # the evaluation's decision score: max over queries of sigmoid(logit) * sigmoid(presence)
        top = (logits.sigmoid().max(1).values * presence.sigmoid()).clamp(1e-6, 1 - 1e-6)
        parts["score"] = F.binary_cross_entropy(top, pres_t, reduction="sum") / P
        total = total + score_weight * parts["score"]
    absent = [i for i, tg in enumerate(targets) if not tg]
    if neg_masks > 0 and absent:  # absent concept: every query's mask should be empty
        l_neg = F.binary_cross_entropy_with_logits(masks[absent], torch.zeros_like(masks[absent]), reduction="sum") \
            / (cnt["absent"] * masks[0].numel())
        parts["neg_mask"] = l_neg
        total = total + neg_masks * 5 * l_neg
    if ob:
        no = max(cnt["no"], 1)
        o_l1, o_giou, o_bce, o_dice = box_mask_terms(torch.cat(ob), torch.cat(otb), torch.cat(om), torch.cat(otm), no)
        parts["o2m_dice"] = o_dice
        total = total + o2m * (5 * o_l1 + 2 * o_giou + 5 * o_bce + dice_weight * o_dice)
    return total, parts


def sam_loss(out, tmask, N=None):
    """Sums divided by N prompts (default: these), so the losses of a batch's shards add up."""
    masks, iou, obj = out
    N = N or masks.shape[0]
    tm = tmask[:, None].expand_as(masks)
    per = F.binary_cross_entropy_with_logits(masks, tm, reduction="none").mean((2, 3)) \
        + dice_loss(masks.flatten(0, 1), tm.flatten(0, 1)).view(masks.shape[0], 3)
    best = per.min(1)
    with torch.no_grad():
        pb, tb = masks > 0, tm > 0.5
        inter = (pb & tb).sum((2, 3)).float()
        union = (pb | tb).sum((2, 3)).float()
        actual = torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(union))
    l_iou = F.mse_loss(iou, actual, reduction="sum") / (N * iou.shape[1])
    l_obj = F.binary_cross_entropy_with_logits(obj[:, 0], torch.ones_like(obj[:, 0]), reduction="sum") / N
    l_mask = best.values.sum() / N
    total = l_mask * 2 + l_iou + 0.1 * l_obj
    return total, {"sam_mask": l_mask, "sam_iou": l_iou, "best_iou": actual.gather(1, best.indices[:, None]).sum() / N}


def shard_loss(mods, a, parts, js, idx, feats, fpn0_c, l0_c, pairs, prompts, counts):
    """Loss of one shard of a batch: images js (positions in the batch idx), their concept pairs
    (position, category, instances) and interactive prompts (position, kind, points, labels, GT mask),
    normalised by the batch's counts (batch_counts plus "prompts")."""
    ti = torch.as_tensor(idx[js[0]:js[-1] + 1])
    f = feats[ti]
    loss, logged = torch.zeros(()), {}
    if "grounding" in parts and pairs:
        fpn = detector_neck_cached(mods["detector_neck"], f, fpn0_c[ti])
        pi = torch.tensor([j - js[0] for j, _, _ in pairs])
        text, pad = mods["concept_bank"](torch.tensor([c for _, c, _ in pairs]))
        gout = mods["grounding"](fpn[0][pi], fpn[1][pi], fpn[2][pi], text, pad)
        l_g, lp = grounding_loss(gout, [tg for _, _, tg in pairs], a.pos_weight, a.pres_weight, a.o2m,
                                 a.dice_weight, a.neg_masks, a.score_weight, counts)
        loss, logged = loss + l_g, logged | lp
    if "sam" in parts and prompts:
        emb, s0, s1 = interactive_neck_cached(mods["interactive_neck"], f, l0_c[ti])
        si = torch.tensor([j - js[0] for j, *_ in prompts])
        # points as at evaluation (one token, no padding point); boxes (two corner tokens) apart
        groups = [[i for i, x in enumerate(prompts) if x[1] == kind] for kind in (0, 1)] if a.single_point \
            else [list(range(len(prompts)))]
        outs, tms = [], []
        for sel in groups:
            if not sel:
                continue
            n = (1 if prompts[sel[0]][1] == 0 else 2) if a.single_point else 2
            st = torch.tensor(sel)
            outs.append(mods["sam_head"](emb[si[st]], s0[si[st]], s1[si[st]],
                                         torch.stack([prompts[i][2][:n] for i in sel]),
                                         torch.stack([prompts[i][3][:n] for i in sel])))
            tms += [prompts[i][4] for i in sel]
        sout = tuple(torch.cat([o[i] for o in outs]) for i in range(3))
        l_s, lp = sam_loss(sout, torch.stack(tms), counts["prompts"])
        loss, logged = loss + l_s, logged | lp
    return loss, {"loss": loss} | logged


# ------------------------------------------------------------------------------------------------
# Sampling
# ------------------------------------------------------------------------------------------------
def sample_pairs(rec, rng, n_pairs=2, p_pos=0.65, world_cats=None, p_hard=0.8):
    present = sorted({t["cat"] for t in rec["inst"]})
    absent = [k for k in range(len(mrt.CONCEPTS)) if k not in present and k not in rec["crowd_cats"]]
    if world_cats is not None and rng.random() < p_hard:  # hard negatives: categories the world draws
        absent = [k for k in absent if k in world_cats] or absent
    pairs = []
    for _ in range(n_pairs):
        if present and (rng.random() < p_pos or not absent):
            c = present[rng.integers(len(present))]
        else:
            c = absent[rng.integers(len(absent))]
        pairs.append((c, [t for t in rec["inst"] if t["cat"] == c]))
    return pairs


def sample_prompt(inst, rng, S, M, kind, p_centroid=0.5):
    """kind 0: point (the centroid with probability p_centroid, else a random interior point), 1: box
    corners. Returns (pts (2,2), labels (2,))."""
    if kind == 1:
        x0, y0, x1, y1 = cxcywh_to_xyxy(inst["box"]).tolist()
        if rng.random() < 0.5:
            bw, bh = x1 - x0, y1 - y0
            j = rng.normal(0, 0.04, 4) * np.array([bw, bh, bw, bh])
            x0, y0, x1, y1 = x0 + j[0], y0 + j[1], x1 + j[2], y1 + j[3]
        return torch.tensor([[x0 * S, y0 * S], [x1 * S, y1 * S]], dtype=torch.float32), torch.tensor([2, 3])
    m = inst["mask_lr"]
    if rng.random() < p_centroid:
        cx, cy = inst["centroid"]  # original pixels -> network input pixels
        w, h = inst["_wh"]
        pt = [cx / w * S, cy / h * S]
    else:
        ys, xs = torch.nonzero(m > 0.5, as_tuple=True)
        if len(ys) == 0:
            ys, xs = torch.nonzero(m == m.max(), as_tuple=True)
        k = rng.integers(len(ys))
        pt = [(xs[k].item() + rng.random()) * S / M, (ys[k].item() + rng.random()) * S / M]
    return torch.tensor([pt, [0.0, 0.0]], dtype=torch.float32), torch.tensor([1, -1])


# ------------------------------------------------------------------------------------------------
# Evaluation (shared/reference/evaluation.md protocol)
# ------------------------------------------------------------------------------------------------
def iou_np(p, g):
    u = np.logical_or(p, g).sum()
    return float(np.logical_and(p, g).sum() / u) if u else 0.0


def up_mask(logits_mm, h, w):
    return (F.interpolate(logits_mm[None, None], size=(h, w), mode="bilinear", align_corners=False)[0, 0] > 0).numpy()


@torch.no_grad()
def evaluate(mods, recs, S, bs=10):
    """Protocol mIoUs, plus diagnostics of the concept path: IoU of the top query's mask without the
    0.5 threshold, the best IoU over all queries, the top score for the (present) category, and the
    top score and the rate of scores >= 0.5 for one absent category per image (false positives)."""
    res = {"concept": [], "box": [], "point": [], "concept_nothr": [], "concept_bestq": [],
           "concept_top_score": [], "absent_top_score": [], "absent_fp_rate": []}
    items = []
    for r in recs:
        cand = [t for t in r["inst"] if t["area"] >= 1]
        if cand:  # largest non-crowd annotation (ties: lowest annotation id)
            items.append((r, max(cand, key=lambda t: (t["area"], -t["ann_id"]))))
    acc = cgf1_acc()
    absent = []
    for r, _ in items:  # one absent category per image, fixed by the image id
        ab = [k for k in range(len(mrt.CONCEPTS)) if k not in {t["cat"] for t in r["inst"]} | r["crowd_cats"]]
        absent.append(ab[r["id"] % len(ab)])
    for i in range(0, len(items), bs):
        chunk = items[i:i + bs]
        f = mods["trunk"](normalise(torch.stack([r["pix"] for r, _ in chunk])))
        emb, s0, s1 = mods["interactive_neck"](f)
        boxes, pts = [], []
        for r, t in chunk:
            x0, y0, x1, y1 = t["box_px"]
            sx, sy = S / r["w"], S / r["h"]
            boxes.append([[x0 * sx, y0 * sy], [x1 * sx, y1 * sy]])
            pts.append([[t["centroid"][0] * sx, t["centroid"][1] * sy]])
        n = len(chunk)
        outs = {"box": mods["sam_head"](emb, s0, s1, torch.tensor(boxes, dtype=torch.float32), torch.tensor([[2, 3]] * n)),
                "point": mods["sam_head"](emb, s0, s1, torch.tensor(pts, dtype=torch.float32), torch.tensor([[1]] * n))}
        fpn = mods["detector_neck"](f)
        for j, (r, _) in enumerate(chunk):
            cgf1_add(mods, r, tuple(x[j:j + 1] for x in fpn), acc)
        cats = [t["cat"] for _, t in chunk] + absent[i:i + bs]
        text, pad = mods["concept_bank"](torch.tensor(cats))
        fpn2 = tuple(torch.cat([x, x]) for x in fpn)
        logits, _, cmasks, presence, _, _ = mods["grounding"](*fpn2, text, pad)
        score = logits[..., 0].sigmoid() * presence.sigmoid()
        for j, (r, t) in enumerate(chunk):
            h, w, g = r["h"], r["w"], t["mask"]
            for mode, (masks, iou, _) in outs.items():
                res[mode].append(iou_np(up_mask(masks[j, iou[j].argmax()], h, w), g))
            q = int(score[j].argmax())
            pred = up_mask(cmasks[j, q], h, w) if score[j, q] >= 0.5 else np.zeros((h, w), bool)
            res["concept"].append(iou_np(pred, g))
            ious = [iou_np(up_mask(cmasks[j, k], h, w), g) for k in range(cmasks.shape[1])]
            res["concept_nothr"].append(ious[q])
            res["concept_bestq"].append(max(ious))
            res["concept_top_score"].append(float(score[j, q]))
            res["absent_top_score"].append(float(score[n + j].max()))
            res["absent_fp_rate"].append(float(score[n + j].max() >= 0.5))
    out = {f"{k}_miou": float(np.mean(res[k])) for k in ("concept", "box", "point", "concept_nothr", "concept_bestq")}
    out |= cgf1_summary(acc)
    out |= {k: float(np.mean(res[k])) for k in ("concept_top_score", "absent_top_score", "absent_fp_rate")}
    return out | {"n_images": len(items)}


def cgf1_acc():
    """Counts for cgf1_add / cgf1_summary."""
    return {"tp": np.zeros(10), "fp": np.zeros(10), "fn": np.zeros(10), "n_det": 0, "n_gt": 0,
            "il": {"tp": 0, "fn": 0, "fp": 0, "tn": 0}}


@torch.no_grad()
def cgf1_add(mods, r, fpn, acc, thr=0.5):
    """SAM3's cgF1 as instinct-eval computes it (docs/evaluation.md), for a diagnosis during training;
    adds image r (its detector-neck features fpn, batch 1) to acc. Phrases = every category with a
    non-crowd instance plus the two unannotated ones instinct-eval draws (cgf1_absent_draw, its
    defaults cgf1_absent 2 and cgf1_seed 0); detections = queries with score >= thr, Hungarian-matched on mask
    IoU at the original size."""
    ts = np.arange(10) * 0.05 + 0.5
    present = sorted({t["cat"] for t in r["inst"]})
    cats = present + r["cgf1_absent"]
    text, pad = mods["concept_bank"](torch.tensor(cats))
    logits, _, cmasks, presence, _, _ = mods["grounding"](*(x.expand(len(cats), -1, -1, -1) for x in fpn), text, pad)
    score = logits[..., 0].sigmoid() * presence.sigmoid()
    for j, c in enumerate(cats):
        dets = [up_mask(cmasks[j, q], r["h"], r["w"]) for q in (score[j] >= thr).nonzero()[:, 0].tolist()]
        gts = [t["mask"] for t in r["inst"] if t["cat"] == c]
        acc["il"][("t" if bool(gts) == bool(dets) else "f") + ("p" if dets else "n")] += 1
        if not gts:
            continue
        acc["n_det"] += len(dets)
        acc["n_gt"] += len(gts)
        m = np.zeros(10)
        if dets:
            iou = np.array([[iou_np(d, g) for g in gts] for d in dets])
            di, gi = linear_sum_assignment(-iou)
            m = (iou[di, gi][None, :] >= ts[:, None]).sum(1)
        acc["tp"] += m
        acc["fp"] += len(dets) - m
        acc["fn"] += len(gts) - m


def cgf1_summary(acc):
    """cgF1, pmF1 (mean and per IoU threshold), IL_MCC and counts, and detections per present
    instance (duplicates show as > 1)."""
    tp, fp, fn, il = acc["tp"], acc["fp"], acc["fn"], acc["il"]
    pr, rc = tp / (tp + fp + 1e-4), tp / (tp + fn + 1e-4)
    pm = 2 * pr * rc / (pr + rc + 1e-4)
    a, b, c, d = il["tp"], il["fp"], il["fn"], il["tn"]
    den = math.sqrt((a + b) * (a + c) * (d + b) * (d + c))
    mcc = (a * d - b * c) / (den + 1e-6) if den > 0 else 0.0
    return {"cgf1": float((pm * mcc).mean()), "pmf1": float(pm.mean()), "il_mcc": mcc, "il_counts": il,
            "pmf1_per_threshold": [round(float(x), 3) for x in pm],
            "dets_per_instance": acc["n_det"] / max(acc["n_gt"], 1)}


# ------------------------------------------------------------------------------------------------
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--world", required=True, help="toy world directory (make_toy_world.py)")
    ap.add_argument("--out", required=True, help="bundle directory to write")
    ap.add_argument("--seed", type=int, default=0, help="reference teacher seed (trunk/init) and sampling seed")
    ap.add_argument("--preset", default="tiny", choices=sorted(mrt.PRESETS))
    ap.add_argument("--steps", type=int, default=1000, help="optimizer steps (deterministic for a fixed --threads)")
    ap.add_argument("--minutes", type=float, default=0.0,
                    help="train for this wall-clock budget instead of --steps (depends on the machine's load)")
    ap.add_argument("--batch-images", type=int, default=8)
    ap.add_argument("--pairs", type=int, default=2, help="concept pairs per image and step")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sam-prompts", type=int, default=3, help="point and box prompts per image and step (each)")
    ap.add_argument("--sam-lr-mult", type=float, default=4.0, help="learning-rate multiplier for the SAM head")
    ap.add_argument("--pos-weight", type=float, default=3.0, help="weight of matched (positive) class logits")
    ap.add_argument("--single-point", type=int, default=1, help="1: point prompts without the padding point")
    ap.add_argument("--prompt-maps", type=int, default=1, help="1: SAM head with dense prompt maps")
    ap.add_argument("--pres-weight", type=float, default=3.0, help="presence loss weight")
    ap.add_argument("--dice-weight", type=float, default=5.0, help="weight of the concept mask dice loss")
    ap.add_argument("--neg-masks", type=float, default=1.0,
                    help="weight of the all-queries empty-mask BCE on absent-concept pairs")
    ap.add_argument("--score-weight", type=float, default=4.0,
                    help="weight of the BCE of max_q sigmoid(logit_q) * sigmoid(presence) against presence")
    ap.add_argument("--ground-lr-mult", type=float, default=2.0, help="learning-rate multiplier for grounding")
    ap.add_argument("--o2m", type=float, default=1.0,
                    help="weight of the one-to-many box/mask loss on unmatched queries (lowest-cost instance)")
    ap.add_argument("--p-pos", type=float, default=0.5, help="share of concept pairs that are present")
    ap.add_argument("--p-hard", type=float, default=1.0,
                    help="share of absent-concept draws among the categories the world's images contain "
                         "(the rest: any concept-bank name absent from the image)")
    ap.add_argument("--p-centroid", type=float, default=0.5,
                    help="share of point prompts at the GT-mask centroid (the rest: random interior points)")
    ap.add_argument("--parts", choices=("all", "grounding", "sam"), default="all",
                    help="train both heads, or one (recipe experiments: the other keeps its random weights)")
    ap.add_argument("--jobs", type=int, choices=(1, 2), default=2,
                    help="2: the batch's two shards in two processes side by side (data parallel), --threads "
                         "split between them; the same result as --jobs 1 with those threads per process")
    ap.add_argument("--rank", type=int, default=-1, help=argparse.SUPPRESS)  # --jobs 2 worker: its shard
    ap.add_argument("--dist-file", default="", help=argparse.SUPPRESS)  # --jobs 2 worker: rendezvous file
    ap.add_argument("--state-out", default="", help=argparse.SUPPRESS)  # --jobs 2 rank 0: trained state
    ap.add_argument("--eval-images", type=int, default=100,
                    help="val images evaluated at the end (0: none, e.g. when instinct-eval evaluates the bundle next)")
    a = ap.parse_args(argv)
    t_start = time.time()
    torch.set_num_threads(a.threads)
    set_blas_threads(a.threads)
    if a.batch_images < 2:
        sys.exit(f"error: --batch-images {a.batch_images}: at least 2 (a batch is two shards of images)")
    if a.jobs == 2 and a.rank < 0:
        if a.minutes > 0:
            sys.exit("error: --minutes needs --jobs 1 (time-bounded shards would drift apart)")
        return train_data_parallel(a, sys.argv[1:] if argv is None else list(argv), t_start)
    a.world_size, shards = (2, (a.rank,)) if a.rank >= 0 else (1, (0, 1))
    if a.rank >= 0:
        dist.init_process_group("gloo", init_method=f"file://{a.dist_file}", rank=a.rank, world_size=2)
    world = pathlib.Path(a.world)
    tag = f"[rank {a.rank}] " if a.rank >= 0 else ""

    mods, info = build_model(a)
    S, M = info["image_size"], info["mask_size"]
    train = load_split(world, "train", S, M)
    val = [] if a.rank >= 0 else load_split(world, "val", S, M, limit=a.eval_images, keep_full=True)
    for r in train:
        for t in r["inst"]:
            t["_wh"] = (r["w"], r["h"])
    world_cats = {t["cat"] for r in train for t in r["inst"]}
    feats, fpn0_c, l0_c = cache_features(mods, train, rank=a.rank)
    t_prep = time.time() - t_start
    print(f"{tag}data: {len(train)} train images ({sum(len(r['inst']) for r in train)} instances), "
          f"{len(val)} val images; trunk and scale-4 neck features cached ({t_prep:.1f}s)", flush=True)

    # The two heads and their necks share no parameter: each is clipped on its own and draws its
    # samples from its own random stream, so a change to one leaves the other's training unchanged.
    part_mods = {"grounding": ["detector_neck", "grounding"], "sam": ["interactive_neck", "sam_head"]}
    parts = list(part_mods) if a.parts == "all" else [a.parts]
    trained = [k for part in parts for k in part_mods[part]]
    frozen = {id(p) for st in (mods["detector_neck"].convs[0], mods["interactive_neck"].sam2_convs[0])
              for p in st.parameters()}
    params, groups, part_params = [], [], {part: [] for part in parts}
    for k in trained:
        mods[k].train()
        gp = []
        for p in mods[k].parameters():
            if id(p) not in frozen:
                p.requires_grad_(True)
                gp.append(p)
        params += gp
        part_params[next(part for part in parts if k in part_mods[part])] += gp
        groups.append({"params": gp, "lr_mult": {"sam_head": a.sam_lr_mult, "grounding": a.ground_lr_mult}.get(k, 1.0)})
    opt = torch.optim.AdamW(groups, lr=a.lr, weight_decay=1e-4, foreach=True)
    rng = np.random.default_rng(a.seed)  # epoch order and concept pairs
    rng_sam = np.random.default_rng([a.seed, 1])  # interactive prompts
    torch.manual_seed(a.seed)

    budget = max(a.minutes * 60 - 25 - t_prep, 10.0)
    warmup = 30
    t_loop = time.time()
    step, epoch, history = 0, 0, []
    B, Q = a.batch_images, info["num_queries"]
    log_keys = ["loss"] + (["cls", "pres", "l1", "giou", "mbce", "dice", "score", "neg_mask", "o2m_dice"]
                           if "grounding" in parts else []) + (["sam_mask", "sam_iou", "best_iou"] if "sam" in parts else [])
    done = False
    while not done:
        order = rng.permutation(len(train))
        sums, cnt = {}, 0
        for bi in range(0, len(order) - B + 1, B):
            frac = (time.time() - t_loop) / budget if a.minutes > 0 else step / a.steps
            if frac >= 1.0:
                done = True
                break
            lr = a.lr * min(1.0, (step + 1) / warmup) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))
            for gparam in opt.param_groups:
                gparam["lr"] = lr * gparam["lr_mult"]
            idx = order[bi:bi + B]
            recs = [train[i] for i in idx]
            # Samples for the whole batch, drawn in the same order whatever --parts and --jobs: concept
            # pairs (image, category, instances) and interactive prompts (image, kind, points, labels, mask).
            pairs_b = [(j, c, tg) for j, r in enumerate(recs)
                       for c, tg in sample_pairs(r, rng, n_pairs=a.pairs, p_pos=a.p_pos, world_cats=world_cats,
                                                 p_hard=a.p_hard)]
            prompts_b = []
            if "sam" in parts:  # a.sam_prompts points and boxes per image (instances drawn at random)
                for j, r in enumerate(recs):
                    for kind in ((0, 1) * a.sam_prompts if r["inst"] else ()):
                        inst = r["inst"][rng_sam.integers(len(r["inst"]))]
                        prompts_b.append((j, kind) + sample_prompt(inst, rng_sam, S, M, kind, a.p_centroid) +
                                         (inst["mask_lr"],))
            # The batch is two shards of images whose losses, normalised by the whole batch's counts,
            # add up to the batch's loss (--jobs 2: one shard per process, gradients summed across them).
            counts = batch_counts([tg for _, _, tg in pairs_b], Q) | {"prompts": len(prompts_b)}
            opt.zero_grad(set_to_none=True)
            logged = {}
            for shard in shards:
                js = range(shard * B // 2, (shard + 1) * B // 2)
                loss, lp = shard_loss(mods, a, parts, js, idx, feats, fpn0_c, l0_c,
                                      [x for x in pairs_b if x[0] in js], [x for x in prompts_b if x[0] in js],
                                      counts)
                if loss.requires_grad:
                    loss.backward()
                for k, v in lp.items():
                    logged[k] = logged.get(k, 0.0) + float(v)
            logged = {k: logged.get(k, 0.0) for k in log_keys}  # the same keys in every shard and step
            for p in params:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
            if a.world_size > 1:
                flat = torch.cat([p.grad.flatten() for p in params])
                dist.all_reduce(flat)
                for p, g in zip(params, flat.split([p.numel() for p in params])):
                    p.grad.copy_(g.view_as(p))
                lt = torch.tensor([logged[k] for k in log_keys], dtype=torch.float64)
                dist.all_reduce(lt)
                logged = dict(zip(log_keys, lt.tolist()))
            for pp in part_params.values():
                torch.nn.utils.clip_grad_norm_(pp, 1.0)
            opt.step()
            step += 1
            cnt += 1
            for k, v in logged.items():
                sums[k] = sums.get(k, 0.0) + v
        if cnt:
            epoch += 1
            avg = {k: v / cnt for k, v in sums.items()}
            history.append({"epoch": epoch, "steps": step, "seconds": round(time.time() - t_loop, 1)} |
                           {k: round(v, 4) for k, v in avg.items()})
            if a.rank <= 0:
                print(f"{tag}epoch {epoch:3d} step {step:5d} {time.time() - t_loop:6.0f}s lr {lr:.2e} " +
                      " ".join(f"{k} {v:.3f}" for k, v in avg.items()), flush=True)
        if a.minutes <= 0 and step >= a.steps:
            done = True
    t_train = time.time() - t_loop
    if a.rank >= 0:
        if a.rank == 0:
            torch.save({"state": {k: mods[k].state_dict() for k in trained}, "history": history, "steps": step,
                        "epochs": epoch, "prepare": t_prep, "train": t_train}, a.state_out)
        dist.destroy_process_group()
        return
    finish(a, mods, info, val, trained, history, step, epoch, t_prep, t_train, t_start)


def set_blas_threads(n):
    """OpenBLAS (torch's BLAS on Debian) keeps its own thread pool, one thread per core unless told,
    and its results depend on its thread count: pinned to --threads so they depend on nothing else."""
    for name in ("libopenblas.so.0", "libblas.so.3"):
        try:
            ctypes.CDLL(name).openblas_set_num_threads(n)
            return
        except (OSError, AttributeError):
            continue


def build_model(a):
    mods, info = mrt.build(a.preset, a.seed)
    if a.prompt_maps:
        h = mods["sam_head"]
        h.__class__ = PromptMapSamHead
        h.add_prompt_maps(info["neck_channels"], info["trunk"]["grid"])
    info["name"] = f"reference-{a.preset}-seed{a.seed}-toyworld"
    return mods, info


def train_data_parallel(a, argv, t_start):
    """--jobs 2: two worker processes (--rank 0/1, half the threads each) train on one shard of every
    batch each and sum their gradients (gloo on the loopback interface) before every step; rank 0
    hands the trained state back and this process evaluates and writes the bundle. On 2 cores this
    is faster than one process on both: the heads' ops are small, so a second thread gained the
    grounding step ~10% and slowed the SAM head's."""
    out = pathlib.Path(a.out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    threads = max(1, a.threads // 2)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.ranks-") as tmp:
        state = os.path.join(tmp, "state.pt")
        env = os.environ | {"OPENBLAS_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads),
                            "GLOO_SOCKET_IFNAME": os.environ.get("GLOO_SOCKET_IFNAME", "lo")}
        procs = [subprocess.Popen([sys.executable, os.path.abspath(__file__)] + argv +
                                  ["--threads", str(threads), "--rank", str(r), "--dist-file",
                                   os.path.join(tmp, "rendezvous"), "--state-out", state], env=env)
                 for r in range(2)]
        codes = []
        for pr in procs:
            codes.append(pr.wait())
            if codes[-1] != 0:  # the other one would wait for its peer forever
                for other in procs:
                    if other.poll() is None:
                        other.kill()
        if any(codes):
            sys.exit(f"error: a training process failed (exit codes {codes}; see its output above)")
        res = torch.load(state)
    mods, info = build_model(a)
    for k, sd in res["state"].items():
        mods[k].load_state_dict(sd)
    val = load_split(pathlib.Path(a.world), "val", info["image_size"], info["mask_size"], limit=a.eval_images,
                     keep_full=True)
    finish(a, mods, info, val, list(res["state"]), res["history"], res["steps"], res["epochs"], res["prepare"],
           res["train"], t_start)


def finish(a, mods, info, val, trained, history, step, epoch, t_prep, t_train, t_start):
    """Evaluates the trained teacher on val, writes the bundle and train_log.json."""
    world, out, S, B = pathlib.Path(a.world), pathlib.Path(a.out), info["image_size"], a.batch_images
    for k in trained:
        mods[k].eval()
        for p in mods[k].parameters():
            p.requires_grad_(False)
    t0 = time.time()
    metrics = evaluate(mods, val, S) if val else None
    t_eval = time.time() - t0
    if metrics is None:
        print("val evaluation skipped (--eval-images 0)", flush=True)
    else:
        report_val(metrics, t_eval)
    t0 = time.time()
    info = mrt.write_bundle(out, mods, info)
    base, _ = mrt.mean_vector_baseline(mods["trunk"], 64, S)
    log = {"world": str(world), "seed": a.seed, "preset": a.preset, "steps": step, "epochs": epoch,
           "batch_images": B, "lr": a.lr, "options": vars(a), "trunk": "frozen (seeded reference trunk)",
           "seconds": {"prepare": round(t_prep, 1), "train": round(t_train, 1), "eval": round(t_eval, 1),
                       "write": round(time.time() - t0, 1), "total": round(time.time() - t_start, 1)},
           "val_metrics": metrics, "mean_teacher_vector_baseline_cosine": round(base, 4), "history": history}
    (out / "train_log.json").write_text(json.dumps(log, indent=2) + "\n")
    print(f"bundle {info['name']} -> {out} (total {time.time() - t_start:.0f}s, {step} steps, {epoch} epochs)")


def report_val(metrics, t_eval):
    """Prints the val metrics of finish()."""
    print(f"val (first {metrics['n_images']} images, evaluation.md protocol): concept IoU "
          f"{metrics['concept_miou']:.3f}  box mIoU {metrics['box_miou']:.3f}  point mIoU {metrics['point_miou']:.3f}"
          f" ({t_eval:.1f}s)", flush=True)
    print(f"concept diagnostics: top-query IoU without the threshold {metrics['concept_nothr_miou']:.3f}, best query "
          f"{metrics['concept_bestq_miou']:.3f}; top score {metrics['concept_top_score']:.3f} (present), "
          f"{metrics['absent_top_score']:.3f} (absent; >= 0.5 on {metrics['absent_fp_rate']:.0%})", flush=True)
    print(f"cgF1 {metrics['cgf1']:.3f} = pmF1 {metrics['pmf1']:.3f} x IL_MCC {metrics['il_mcc']:.3f} (IL {metrics['il_counts']}; "
          f"pmF1 at IoU 0.5..0.95 {metrics['pmf1_per_threshold']}; detections per instance "
          f"{metrics['dets_per_instance']:.2f})", flush=True)


if __name__ == "__main__":
    main()
