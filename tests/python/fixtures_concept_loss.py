#!/usr/bin/env python3
"""Independent references for tests/unit/test_concept_loss.cpp (include/instinct/distill/concept_loss.h).

Writes cases.pt: random fp32 inputs, and the expected values and gradients computed in fp64 by
straightforward Python: torchvision.ops.generalized_box_iou / sigmoid_focal_loss, scipy's
linear_sum_assignment on a cost built here in torch, F.grid_sample for point sampling, and explicit
loops for the class KD and CLoCK weighting."""
import argparse
import math

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torchvision.ops import box_convert, generalized_box_iou, sigmoid_focal_loss

ap = argparse.ArgumentParser()
ap.add_argument("--out", required=True)
out = ap.parse_args().out
g = torch.Generator().manual_seed(4242)


def rand(*shape):
    return torch.rand(*shape, generator=g)


def randn(*shape):
    return torch.randn(*shape, generator=g)


def rand_boxes(n):  # cxcywh inside [0,1]-ish, non-degenerate
    c = 0.2 + 0.6 * rand(n, 2)
    wh = 0.05 + 0.45 * rand(n, 2)
    return torch.cat([c, wh], 1)


def leaf(x):
    return x.detach().double().clone().requires_grad_(True)


fx = {}

# ---- GIoU (xyxy), pairwise and paired.
a = box_convert(rand_boxes(7), "cxcywh", "xyxy")
b = box_convert(rand_boxes(5), "cxcywh", "xyxy")
fx["giou"] = {"a": a, "b": b, "pairwise": generalized_box_iou(a.double(), b.double()),
              "paired": torch.diagonal(generalized_box_iou(a[:5].double(), b.double()))}

# ---- A batch of P pairs, Q queries; T_p teacher targets per pair (0 and T > Q included).
P, Q, H = 4, 10, 12
T = [3, 0, 6, 12]
s_logits = 2.5 * randn(P, Q)
s_boxes = rand_boxes(P * Q).reshape(P, Q, 4)
t_boxes = [rand_boxes(t) if t else torch.zeros(0, 4) for t in T]
t_logits = [2 * randn(t) for t in T]
t_presence = randn(P)
s_presence = randn(P)
s_masks = 3 * randn(P, Q, H, H)
t_masks = [4 * randn(t, H, H) for t in T]
t_masks16 = [4 * randn(t, 16, 16) for t in T]


def cost_matrix(logits, boxes, tboxes, wc=2.0, wl1=5.0, wg=2.0, alpha=0.25, gamma=2.0):
    x = logits.double()
    p = x.sigmoid()
    pos = alpha * (1 - p) ** gamma * (-F.logsigmoid(x))
    neg = (1 - alpha) * p ** gamma * (-F.logsigmoid(-x))
    l1 = (boxes.double()[:, None, :] - tboxes.double()[None, :, :]).abs().sum(-1)
    gi = generalized_box_iou(box_convert(boxes.double(), "cxcywh", "xyxy"),
                             box_convert(tboxes.double(), "cxcywh", "xyxy"))
    return wc * (pos - neg)[:, None] + wl1 * l1 - wg * gi


costs, pairs, totals = [], [], []
for p in range(P):
    c = cost_matrix(s_logits[p], s_boxes[p], t_boxes[p])
    r, k = linear_sum_assignment(c.numpy())
    costs.append(c)
    pairs.append(torch.tensor(np.stack([r, k], 1), dtype=torch.int64).reshape(-1, 2))
    totals.append(float(c.numpy()[r, k].sum()))
fx["batch"] = {"s_logits": s_logits, "s_boxes": s_boxes, "t_boxes": t_boxes, "t_logits": t_logits,
               "t_presence": t_presence, "s_presence": s_presence, "s_masks": s_masks, "t_masks": t_masks,
               "t_masks16": t_masks16}
fx["match"] = {"costs": costs, "pairs": pairs, "totals": totals}
matches = [[(int(q), int(t)) for q, t in pr.tolist()] for pr in pairs]
K = sum(len(m) for m in matches)

# ---- box loss
sb = leaf(s_boxes)
src = torch.stack([sb[p, q] for p, m in enumerate(matches) for q, _ in m])
tgt = torch.stack([t_boxes[p][t].double() for p, m in enumerate(matches) for _, t in m])
l1 = (src - tgt).abs().sum() / K
gi = (1 - torch.diagonal(generalized_box_iou(box_convert(src, "cxcywh", "xyxy"),
                                            box_convert(tgt, "cxcywh", "xyxy")))).sum() / K
(l1 + 3 * gi).backward()
fx["box"] = {"l1": l1.detach(), "giou": gi.detach(), "grad_l1_plus_3giou": sb.grad}


# ---- mask loss: full resolution (bce, focal) and on given points (teacher 16x16)
def mask_ref(kind, tms, points=None):
    sm = leaf(s_masks)
    src = torch.stack([sm[p, q] for p, m in enumerate(matches) for q, _ in m])
    tgt = torch.stack([tms[p][t].double() for p, m in enumerate(matches) for _, t in m])
    if points is None:
        src, tgt = src.flatten(1), tgt.flatten(1)
    else:
        grid = (2 * points.double() - 1)[:, None]
        src = F.grid_sample(src[:, None], grid, mode="bilinear", padding_mode="border", align_corners=False)[:, 0, 0]
        tgt = F.grid_sample(tgt[:, None], grid, mode="bilinear", padding_mode="border", align_corners=False)[:, 0, 0]
    gt = tgt.sigmoid()
    if kind == "bce":
        per = F.binary_cross_entropy_with_logits(src, gt, reduction="none")
    else:
        per = sigmoid_focal_loss(src, gt, alpha=0.25, gamma=2.0, reduction="none")
    mask = per.mean(1).sum() / K
    pr = src.sigmoid()
    dice = (1 - (2 * (pr * gt).sum(1) + 1) / (pr.sum(1) + gt.sum(1) + 1)).sum() / K
    (mask + 0.5 * dice).backward()
    return {"mask": mask.detach(), "dice": dice.detach(), "grad_mask_plus_half_dice": sm.grad}


points = rand(K, 20, 2)
fx["mask_bce"] = mask_ref("bce", t_masks)
fx["mask_focal"] = mask_ref("focal", t_masks)
fx["mask_points"] = mask_ref("bce", t_masks16, points)
fx["mask_points"]["points"] = points


# ---- class KD (explicit loop), temperature 2, w_unmatched 0.5, gate + confidence on
def class_ref(temp, w_un, gate_on, conf_on):
    sl = leaf(s_logits)
    total = 0
    for p in range(P):
        gate = torch.sigmoid(t_presence[p].double()) if gate_on else 1.0
        tgt_of = {q: t for q, t in matches[p]}
        for q in range(Q):
            if q in tgt_of:
                tl = t_logits[p][tgt_of[q]].double()
                y = torch.sigmoid(tl / temp)
                w = torch.sigmoid(tl) if conf_on else 1.0
            else:
                y, w = 0.0, w_un
            z = sl[p, q] / temp
            bce = -(y * F.logsigmoid(z) + (1 - y) * F.logsigmoid(-z))
            total = total + gate * w * bce * temp ** 2
    loss = total / (P * Q)
    loss.backward()
    return {"loss": loss.detach(), "grad": sl.grad}


fx["class_kd"] = class_ref(2.0, 0.5, True, True)
fx["class_kd_plain"] = class_ref(1.0, 1.0, False, False)

# ---- presence KD, temperature 1.5
sp = leaf(s_presence)
temp = 1.5
yp = torch.sigmoid(t_presence.double() / temp)
zp = sp / temp
lp = (-(yp * F.logsigmoid(zp) + (1 - yp) * F.logsigmoid(-zp))).mean() * temp ** 2
lp.backward()
fx["presence_kd"] = {"loss": lp.detach(), "grad": sp.grad}

# ---- CLoCK memory loss: G = 6 grid, B = 3 (one element without boxes), explicit loops
G, B, D = 6, 3, 8
alpha, beta = 2.0, 0.5
s_mem = randn(G * G, B, D)
t_mem = randn(G * G, B, D)
m_boxes = [torch.tensor([[0.3, 0.3, 0.4, 0.5], [0.7, 0.6, 0.3, 0.32]]), torch.zeros(0, 4),
           torch.tensor([[0.5, 0.5, 0.8, 0.8], [0.45, 0.55, 0.3, 0.38], [0.8, 0.2, 0.2, 0.2]])]
weights = torch.zeros(G * G, B, dtype=torch.float64)
centres = [(i + 0.5) / G for i in range(G)]
for bx in torch.cat(m_boxes).tolist():  # no cell centre on a box edge (fp32 rounding would decide)
    edges = [bx[0] - bx[2] / 2, bx[0] + bx[2] / 2, bx[1] - bx[3] / 2, bx[1] + bx[3] / 2]
    assert min(abs(e - c) for e in edges for c in centres) > 1e-3, bx
for bi in range(B):
    fg = {}
    for n in range(G * G):
        y, x = divmod(n, G)
        cx, cy = (x + 0.5) / G, (y + 0.5) / G
        best = None
        for bx in m_boxes[bi].tolist():
            if bx[0] - bx[2] / 2 <= cx <= bx[0] + bx[2] / 2 and bx[1] - bx[3] / 2 <= cy <= bx[1] + bx[3] / 2:
                area = max(1.0, bx[2] * G * bx[3] * G)
                best = area if best is None else min(best, area)
        if best is not None:
            fg[n] = best
    n_bg = G * G - len(fg)
    for n in range(G * G):
        weights[n, bi] = alpha / fg[n] if n in fg else beta / max(n_bg, 1)
sm_ = leaf(s_mem)
lc = ((sm_ - t_mem.double()) ** 2).sum(-1).mul(weights).sum() / B
lc.backward()
fx["clock"] = {"s_mem": s_mem, "t_mem": t_mem, "boxes": m_boxes, "alpha": alpha, "beta": beta,
               "weights": weights, "loss": lc.detach(), "grad": sm_.grad}

# ---- region-text InfoNCE: C = 3 concepts from padded text tokens, tau 0.07
C, L, Dq = 3, 5, 8
text = randn(C, L, Dq)
pad = torch.tensor([[False, False, True, True, True], [False] * 5, [False, True, True, True, True]])
pooled = torch.stack([text[c][~pad[c]].double().mean(0) for c in range(C)])
q_emb = randn(P, Q, Dq)
pair_concept = torch.tensor([2, 0, 1, 2], dtype=torch.int64)
qe = leaf(q_emb)
h = torch.stack([qe[p, q] for p, m in enumerate(matches) for q, _ in m])
ids = torch.tensor([int(pair_concept[p]) for p, m in enumerate(matches) for _ in m])
logits = F.normalize(h, dim=1) @ F.normalize(pooled, dim=1).T / 0.07
lr = F.cross_entropy(logits, ids)
lr.backward()
fx["region_text"] = {"text": text, "pad": pad, "pooled": pooled, "q_emb": q_emb, "pair_concept": pair_concept,
                     "loss": lr.detach(), "grad": qe.grad}

torch.save(fx, f"{out}/cases.pt")
print(f"concept_loss fixtures written ({K} matches)")
