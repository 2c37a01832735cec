#!/usr/bin/env python3
"""SAM3's own code as the reference for tests/unit/test_sam3_parity.cpp (issue 13).

Runs SAM3's training and evaluation functions ($SAM3_SRC, no weights) on seeded random inputs and
saves inputs + SAM3's outputs, for the C++ test to run our counterparts on the same inputs:

  losses.pt   the Hungarian matcher that SAM3's image training configs use
              (sam3.train.matcher.BinaryHungarianMatcherV2, focal, built from the `scratch.matcher`
              block of train/configs/roboflow_v100/roboflow_v100_full_ft_100_images.yaml): the cost
              matrix it hands to scipy (captured by wrapping the module's linear_sum_assignment, so
              nothing of the cost is re-implemented here) and its assignment; the loss classes of
              sam3/train/loss/loss_fns.py (Boxes, Masks, IABCEMdetr incl. the presence loss),
              dice_loss, sigmoid_focal_loss and mask_sampling.point_sample; the normaliser of
              sam3_loss.Sam3LossWrapper (normalization="local").
  post.pt     the concept post-processing of image inference: Sam3Processor._forward_grounding
              (sam3/model/sam3_image_processor.py) and PostProcessImage (sam3/eval/postprocessors.py)
              fed with given grounding outputs through a stand-in model object.
  cgf1/       SAM3's CGF1Evaluator (sam3/eval/cgf1_eval.py, on the real pycocotools built from
              $INSTINCT_COCOAPI_SRC) on small COCO-style ground truths (one "image" per (image, phrase)
              pair, as SAM3's evaluator expects; present, absent and crowd-only phrases; RLE and
              polygon segmentations) and predictions (scores across the 0.5 threshold): the metric
              summary, the accumulated counts and every pair's matched IoUs.

Glue that is ours, not SAM3's: the sigmoid focal loss is called with triton=False (SAM3's own
PyTorch branch; its default is a CUDA Triton kernel computing the same formula), and modules SAM3
imports but these functions never run (triton, torchmetrics.f1_score for a logged statistic,
torch._inductor) are stand-ins; scripts/sam3_support.py applies the usual SAM3 import shims.

Without $SAM3_SRC everything is skipped (SKIPPED); without $INSTINCT_COCOAPI_SRC only cgf1/ is.
The SAM3 work runs in a child process so that the shims never leak into other generators
(make_fixtures.py runs every generator in one interpreter)."""
import argparse
import contextlib
import functools
import io
import json
import pathlib
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import ref_sources  # noqa: E402

MATCHER_CONFIG = "train/configs/roboflow_v100/roboflow_v100_full_ft_100_images.yaml"


# ------------------------------------------------------------------------------------------------
# Imports

def import_sam3_pieces(sam3_src):
    """Imports the SAM3 modules used here (after the real pycocotools, when available, is on the
    path: apply_shims stands in for a missing pycocotools)."""
    sys.path.insert(0, str(HERE.parent.parent / "scripts"))
    import sam3_support
    if str(sam3_src) not in sys.path:
        sys.path.insert(0, str(sam3_src))
    applied = sam3_support.apply_shims()

    def missing(name):
        try:
            __import__(name)
            return False
        except ImportError:
            return True

    for name in ("torchmetrics", "torch._inductor.runtime.triton_helpers"):
        if missing(name):
            parts = name.split(".")
            for k in range(1, len(parts)):  # plain parent packages, then a lazy leaf
                sub = ".".join(parts[:k])
                if sub not in sys.modules:
                    sam3_support._stub_module(sub, __path__=[])
            sam3_support._lazy_stub(name)
            applied.append(f"{name} (stand-in: not run here)")
    import sam3.train.matcher as matcher
    import sam3.train.loss.loss_fns as loss_fns
    import sam3.train.loss.mask_sampling as mask_sampling
    import sam3.train.loss.sam3_loss as sam3_loss
    import sam3.model.box_ops as box_ops
    import sam3.eval.postprocessors as postprocessors
    import sam3.model.sam3_image_processor as image_processor
    return dict(matcher=matcher, loss_fns=loss_fns, mask_sampling=mask_sampling, sam3_loss=sam3_loss,
                box_ops=box_ops, postprocessors=postprocessors, image_processor=image_processor), applied


# ------------------------------------------------------------------------------------------------
# Matcher and losses

def rand_boxes(g, n, lo=0.02, hi=0.5):
    import torch
    c = 0.1 + 0.8 * torch.rand(n, 2, generator=g, dtype=torch.float64)
    wh = lo + (hi - lo) * torch.rand(n, 2, generator=g, dtype=torch.float64)
    return torch.cat([c, wh], 1)


def matcher_from_config(sam3_src, matcher_mod):
    import yaml
    cfg = yaml.safe_load((pathlib.Path(sam3_src) / "sam3" / MATCHER_CONFIG).read_text())["scratch"]["matcher"]
    cfg = dict(cfg)
    target = cfg.pop("_target_")
    assert target == "sam3.train.matcher.BinaryHungarianMatcherV2", target
    return matcher_mod.BinaryHungarianMatcherV2(**cfg), cfg


def run_matcher(m, matcher_mod, logits, boxes, tboxes):
    """SAM3's matcher on one batch; returns the captured per-entry cost matrices (Q, T_b) (empty
    for T_b = 0, which SAM3 drops before matching) and per-entry matches (K, 2) = (query, target)."""
    import numpy as np
    import torch
    B, Q = logits.shape
    T = [t.shape[0] for t in tboxes]
    tmax = max(T + [1])
    padded = torch.zeros(B, tmax, 4, dtype=boxes.dtype)
    for b, t in enumerate(tboxes):
        padded[b, : T[b]] = t
    captured = []
    real = matcher_mod.linear_sum_assignment

    def spy(cost, *a, **k):
        captured.append(np.array(cost, copy=True))
        return real(cost, *a, **k)

    matcher_mod.linear_sum_assignment = spy
    try:
        batch_idx, src_idx, tgt_idx = m({"pred_logits": logits[..., None], "pred_boxes": boxes},
                                        {"num_boxes": torch.tensor(T), "boxes_padded": padded})
    finally:
        matcher_mod.linear_sum_assignment = real
    offsets = np.concatenate([[0], np.cumsum(T)])
    costs, matches, k = [], [], 0
    for b in range(B):
        if T[b] == 0:
            costs.append(torch.zeros(Q, 0, dtype=torch.float64))
            matches.append(torch.zeros(0, 2, dtype=torch.long))
            continue
        costs.append(torch.from_numpy(captured[k]).double())
        k += 1
        sel = batch_idx == b
        src = src_idx[sel]
        # Without target indices SAM3 lists, per entry, the query matched to target 0, 1, ..., T_b - 1.
        tgt = torch.arange(T[b]) if tgt_idx is None else tgt_idx[sel] - int(offsets[b])
        order = torch.argsort(src)
        matches.append(torch.stack([src[order], tgt[order]], 1).long())
    assert k == len(captured)
    return costs, matches, (batch_idx, src_idx, tgt_idx)


def loss_cases(mods, sam3_src, g):
    import torch
    matcher_mod, loss_fns, box_ops = mods["matcher"], mods["loss_fns"], mods["box_ops"]
    # SAM3's PyTorch focal-loss branch (its default is a Triton CUDA kernel of the same formula).
    loss_fns.sigmoid_focal_loss = functools.partial(loss_fns.sigmoid_focal_loss, triton=False)
    m, mcfg = matcher_from_config(sam3_src, matcher_mod)
    wrapper = mods["sam3_loss"].Sam3LossWrapper(loss_fns_find=[], normalization="local")
    f64 = torch.float64

    def degenerate(x, which):  # zero width (which=2) or zero height (3) on every other box
        x = x.clone()
        x[::2, which] = 0
        return x

    specs = [  # name, Q, T per entry, logit scale, box kind
        ("basic", 12, [3, 0, 7], 2.0, "valid"),
        ("q_lt_t", 4, [6, 2], 2.0, "valid"),
        ("all_empty", 5, [0, 0], 2.0, "valid"),
        ("sam3_scale", 200, [25, 1], 3.0, "valid"),
        ("extreme_logits", 10, [4, 2], 0.0, "valid"),
        ("degenerate_targets", 8, [5], 2.0, "targets"),
        ("degenerate_queries", 8, [5], 2.0, "queries"),
    ]
    cases = []
    for name, Q, T, scale, kind in specs:
        B = len(T)
        logits = scale * torch.randn(B, Q, generator=g, dtype=f64)
        if name == "extreme_logits":
            vals = torch.tensor([-80.0, -30.0, -12.0, -1.0, 0.0, 1e-3, 1.0, 12.0, 30.0, 80.0], dtype=f64)
            logits = vals[torch.randint(0, len(vals), (B, Q), generator=g)]
        boxes = rand_boxes(g, B * Q).reshape(B, Q, 4)
        tboxes = [rand_boxes(g, t) for t in T]
        if kind == "targets":
            tboxes = [degenerate(degenerate(t, 2)[1:], 3) if t.shape[0] else t for t in tboxes]
            tboxes = [torch.cat([t, degenerate(rand_boxes(g, 1), 2)]) for t in tboxes]
        if kind == "queries":
            boxes = torch.stack([degenerate(boxes[b], 2 + b % 2) for b in range(B)])
        costs, matches, indices = run_matcher(m, matcher_mod, logits, boxes, tboxes)
        case = {"name": name, "logits": logits, "boxes": boxes, "t_boxes": tboxes, "costs": costs,
                "matches": matches}
        # Losses on SAM3's matches, with SAM3's normaliser (total targets, at least 1).
        packed = torch.cat(tboxes) if sum(T) else torch.zeros(0, 4, dtype=f64)
        targets = {"num_boxes": torch.tensor(T), "boxes": packed, "boxes_xyxy": box_ops.box_cxcywh_to_xyxy(packed)}
        num_boxes = wrapper._get_num_boxes(targets)
        case["num_boxes"] = float(num_boxes)
        outputs = {"pred_boxes": boxes, "pred_boxes_xyxy": box_ops.box_cxcywh_to_xyxy(boxes)}
        bl = loss_fns.Boxes(weight_dict={"loss_bbox": 5.0, "loss_giou": 2.0}).get_loss(outputs, targets, indices, num_boxes)
        case["loss_bbox"] = bl["loss_bbox"].double()
        case["loss_giou"] = bl["loss_giou"].double()
        cases.append(case)

    # Masks (focal + dice, full resolution): hard targets as in SAM3, and soft targets (our teacher's
    # sigmoid(mask logits)) through the same SAM3 functions.
    masks = []
    for name, Q, T, H, HT in [("same_size", 6, [3, 2], 16, 16), ("upsampled", 5, [2, 3], 12, 24),
                              ("q_lt_t", 2, [3], 8, 8)]:
        B = len(T)
        logits = 2.0 * torch.randn(B, Q, generator=g, dtype=f64)
        boxes = rand_boxes(g, B * Q).reshape(B, Q, 4)
        tboxes = [rand_boxes(g, t) for t in T]
        _, matches, indices = run_matcher(m, matcher_mod, logits, boxes, tboxes)
        s_masks = 3.0 * torch.randn(B, Q, H, H, generator=g, dtype=f64)
        t_logits = 4.0 * torch.randn(sum(T), HT, HT, generator=g, dtype=f64)
        hard = (t_logits > 0).double()
        r = {"name": name, "s_masks": s_masks, "t_logits": list(torch.split(t_logits, T)),
             "matches": matches, "num_boxes": float(sum(T))}
        for tag, tm in (("hard", hard), ("soft", t_logits.sigmoid())):
            targets = {"masks": tm, "is_valid_mask": torch.ones(sum(T), dtype=torch.bool)}
            ml = loss_fns.Masks(weight_dict={"loss_mask": 200.0, "loss_dice": 10.0}, focal_alpha=0.25,
                                focal_gamma=2).get_loss({"pred_masks": s_masks}, targets, indices, float(sum(T)))
            r[f"loss_mask_{tag}"] = ml["loss_mask"].double()
            r[f"loss_dice_{tag}"] = ml["loss_dice"].double()
        masks.append(r)

    # Per-mask dice (reduce=False) and point sampling (SAM3: zero padding).
    K, N = 5, 40
    d_logits = 3.0 * torch.randn(K, N, generator=g, dtype=f64)
    d_targets = torch.rand(K, N, generator=g, dtype=f64)
    dice = {"logits": d_logits, "targets": d_targets,
            "per_mask": loss_fns.dice_loss(d_logits, d_targets, 1.0, reduce=False).double(),
            "per_mask_hard": loss_fns.dice_loss(d_logits, (d_targets > 0.5).double(), 1.0, reduce=False).double()}
    maps = torch.randn(3, 9, 11, generator=g, dtype=f64)
    pts = torch.rand(3, 30, 2, generator=g, dtype=f64)
    pts[:, :4] = torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.01, 0.5], [0.5, 0.995]], dtype=f64)
    point = {"maps": maps, "points": pts,
             "sam3": mods["mask_sampling"].point_sample(maps[:, None], pts, align_corners=False)[:, 0].double()}

    # IABCEMdetr at the one setting where it and our class KD loss are the same function
    # (alpha = 1: target = the query's own probability; pos_weight 1, gamma 0, no padding), and
    # its presence loss (alpha 0.5, gamma 0 defaults), on a batch with absent entries (T = 0).
    T = [3, 0, 4, 0]
    B, Q = len(T), 7
    logits = (1.5 * torch.randn(B, Q, generator=g, dtype=f64)).clamp(-4, 4)  # probabilities > 0.01 (SAM3 clamps)
    boxes = rand_boxes(g, B * Q).reshape(B, Q, 4)
    tboxes = [rand_boxes(g, t) for t in T]
    _, matches, indices = run_matcher(m, matcher_mod, logits, boxes, tboxes)
    presence = 2.0 * torch.randn(B, generator=g, dtype=f64)
    tmax = max(T)
    ids = torch.full((B, tmax), -1, dtype=torch.long)
    padded = torch.zeros(B, tmax, 4, dtype=f64)
    for b, t in enumerate(tboxes):
        ids[b, : T[b]] = torch.arange(T[b])
        padded[b, : T[b]] = t
    packed = torch.cat([t for t in tboxes if t.shape[0]])
    targets = {"boxes_xyxy": box_ops.box_cxcywh_to_xyxy(packed), "object_ids_padded": ids, "boxes_padded": padded,
               "num_boxes": torch.tensor(T)}
    # fp32: IABCEMdetr builds its target tensor as float32.
    logits, presence = logits.float(), presence.float()
    targets["boxes_xyxy"] = targets["boxes_xyxy"].float()
    outputs = {"pred_logits": logits[..., None], "pred_boxes_xyxy": box_ops.box_cxcywh_to_xyxy(boxes).float(),
               "presence_logit_dec": presence[:, None]}
    iab = loss_fns.IABCEMdetr(pos_weight=1.0, weight_dict={"loss_ce": 1.0, "presence_loss": 1.0}, gamma=0,
                              weak_loss=False, alpha=1.0, pad_n_queries=None, use_presence=True)
    il = iab.get_loss(outputs, targets, indices, float(sum(T)))
    cls = {"logits": logits, "presence": presence, "present": torch.tensor([float(t > 0) for t in T], dtype=f64),
           "matches": matches, "loss_ce": il["loss_ce"], "presence_loss": il["presence_loss"]}
    return {"matcher_config": json.dumps(mcfg), "match": cases, "masks": masks, "dice": dice, "point": point,
            "class": cls}


# ------------------------------------------------------------------------------------------------
# Post-processing

class _GroundingOutputs:
    """Stand-in for SAM3's image model in Sam3Processor: forward_grounding returns given outputs."""

    def __init__(self, outputs):
        self.outputs = outputs

    def forward_grounding(self, **kwargs):
        return self.outputs


def post_cases(mods, g):
    import torch
    cases = []
    specs = [("presence_on", 37, 53, 16, 8, 3.0), ("presence_off", 40, 30, 16, 6, -4.0),
             ("mid", 120, 90, 32, 8, 0.3), ("large", 300, 400, 24, 6, 2.0)]
    for name, h, w, M, Q, pres in specs:
        logits = 2.0 * torch.randn(1, Q, 1, generator=g)
        boxes = rand_boxes(g, Q).float().reshape(1, Q, 4)
        masks = 4.0 * torch.randn(1, Q, M, M, generator=g)
        if name == "presence_on":
            logits[0, 0, 0] = 0.0           # score exactly 0.5 x sigmoid(presence)
            masks[0, 1] = 1e-8               # sigmoid(1e-8) rounds to 0.5 in fp32: off in SAM3
            masks[0, 1, : M // 2] = -1e-8
            masks[0, 2, :, : M // 2] = 0.0   # exactly 0
        if name == "mid":
            logits[0, 1, 0] = 0.0
        presence = torch.tensor([[pres]])
        if name == "mid":
            presence = torch.tensor([[40.0]])  # sigmoid = 1 in fp32: query 1 scores exactly 0.5
        outputs = {"pred_logits": logits, "pred_boxes": boxes, "pred_masks": masks, "presence_logit_dec": presence}
        proc = mods["image_processor"].Sam3Processor(_GroundingOutputs(outputs), device="cpu", confidence_threshold=0.5)
        state = proc._forward_grounding({"original_height": h, "original_width": w, "backbone_out": {},
                                         "geometric_prompt": None})
        pp = mods["postprocessors"].PostProcessImage(max_dets_per_img=-1, iou_type="segm", to_cpu=True,
                                                     use_original_sizes_box=True, use_original_sizes_mask=True,
                                                     always_interpolate_masks_on_gpu=False, use_presence=True)
        size = torch.tensor([[h, w]])
        res = pp(outputs, size, size, consistent=False)[0]
        # Which queries the processor kept (it returns them in query order).
        scores_all = logits.sigmoid()[0, :, 0] * presence.sigmoid()[0, 0]
        kept = torch.nonzero(scores_all > 0.5).flatten()
        assert torch.equal(state["scores"], scores_all[kept])
        cases.append({"name": name, "h": h, "w": w, "logits": logits[0, :, 0], "boxes": boxes[0],
                      "masks": masks[0], "presence": presence[0, 0],
                      "processor_kept": kept, "processor_scores": state["scores"],
                      "processor_boxes": state["boxes"].float(), "processor_masks": state["masks"][:, 0].to(torch.uint8),
                      "eval_scores": res["scores"].float(), "eval_boxes": res["boxes"].float(),
                      "eval_masks": res["masks"][:, 0].to(torch.uint8)})
    return cases


# ------------------------------------------------------------------------------------------------
# cgF1

def _rle(mask_util, m):
    import numpy as np
    r = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
    return {"size": [int(x) for x in r["size"]], "counts": r["counts"].decode("ascii")}


def cgf1_scenario(mask_util, rng, n_images, variant):
    """A COCO-style ground truth with one "image" per (image, phrase) pair and predictions."""
    import numpy as np
    images, anns, preds, pairs = [], [], [], []
    cats = [{"id": c, "name": f"thing{c}"} for c in range(1, 6)]
    pair_id, ann_id = 0, 0
    for i in range(n_images):
        h, w = int(rng.integers(24, 70)), int(rng.integers(24, 70))
        n_phrases = int(rng.integers(2, 5))
        for c in rng.choice(np.arange(1, 6), size=n_phrases, replace=False):
            pair_id += 1
            kind = rng.choice(["present", "absent", "crowd"], p=[0.6, 0.3, 0.1]) if variant != "all_present" else "present"
            images.append({"id": pair_id, "height": h, "width": w, "file_name": f"img{i}.jpg",
                           "original_img_id": i, "text_input": f"thing{c}", "is_instance_exhaustive": True})
            pairs.append([pair_id, int(c)])
            gts = []
            n_gt = int(rng.integers(1, 5)) if kind == "present" else 0
            for k in range(n_gt + (1 if kind == "crowd" or (kind == "present" and rng.random() < 0.2) else 0)):
                crowd = k >= n_gt
                y0, x0 = int(rng.integers(0, h - 6)), int(rng.integers(0, w - 6))
                y1, x1 = int(rng.integers(y0 + 3, h + 1)), int(rng.integers(x0 + 3, w + 1))
                m = np.zeros((h, w), bool)
                m[y0:y1, x0:x1] = True
                if rng.random() < 0.5:  # carve a hole
                    m[(y0 + y1) // 2, x0:(x0 + x1) // 2] = False
                ann_id += 1
                a = {"id": ann_id, "image_id": pair_id, "category_id": int(c), "iscrowd": int(crowd),
                     "area": int(m.sum()), "bbox": [x0, y0, x1 - x0, y1 - y0]}
                if crowd:  # uncompressed RLE (column-major run lengths), as COCO stores crowds
                    flat = m.flatten(order="F").astype(np.uint8)
                    runs, cur, n = [], 0, 0
                    for v in flat:
                        if v != cur:
                            runs.append(n)
                            cur, n = v, 0
                        n += 1
                    runs.append(n)
                    a["segmentation"] = {"size": [h, w], "counts": [int(r) for r in runs]}
                elif rng.random() < 0.3:  # polygon of the rectangle
                    m = None
                    a["segmentation"] = [[x0, y0, x1, y0, x1, y1, x0, y1]]
                else:
                    a["segmentation"] = _rle(mask_util, m)
                anns.append(a)
                if not crowd:
                    gts.append(m if m is not None else mask_util.decode(
                        mask_util.frPyObjects(a["segmentation"], h, w)).max(axis=2).astype(bool))
            if variant == "no_predictions":
                continue
            # Predictions: shifted / grown copies of the ground truth (IoUs across 0.5..0.95),
            # duplicates and random boxes; scores across the 0.5 threshold (0.5 itself included).
            for m in gts:
                if rng.random() < 0.85:
                    dy, dx = int(rng.integers(-3, 4)), int(rng.integers(-3, 4))
                    p = np.roll(np.roll(m, dy, 0), dx, 1)
                    if rng.random() < 0.3:
                        p = p | np.roll(p, 1, 0)
                    preds.append((pair_id, int(c), p, float(rng.choice([rng.uniform(0.5, 1.0), 0.5, rng.uniform(0.2, 0.5)],
                                                                        p=[0.7, 0.1, 0.2]))))
                if rng.random() < 0.2:
                    preds.append((pair_id, int(c), m.copy(), float(rng.uniform(0.3, 0.9))))
            for _ in range(int(rng.integers(0, 3)) if rng.random() < 0.5 else 0):
                y0, x0 = int(rng.integers(0, h - 4)), int(rng.integers(0, w - 4))
                p = np.zeros((h, w), bool)
                p[y0:y0 + int(rng.integers(2, 12)), x0:x0 + int(rng.integers(2, 12))] = True
                preds.append((pair_id, int(c), p, float(rng.uniform(0.2, 0.95))))
    # Exact-threshold IoUs: a 20 x 20 ground truth and predictions covering 11/20 ... 19/20 of it.
    if variant == "thresholds":
        h, w = 20, 40
        for k, cov in enumerate([10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]):
            pair_id += 1
            images.append({"id": pair_id, "height": h, "width": w, "file_name": "thr.jpg", "original_img_id": 999,
                           "text_input": "thing1", "is_instance_exhaustive": True})
            pairs.append([pair_id, 1])
            m = np.zeros((h, w), bool)
            m[:, :20] = True
            ann_id += 1
            anns.append({"id": ann_id, "image_id": pair_id, "category_id": 1, "iscrowd": 0, "area": 400,
                         "bbox": [0, 0, 20, 20], "segmentation": _rle(mask_util, m)})
            p = np.zeros((h, w), bool)
            p[:, :cov] = True  # IoU = cov / 20
            preds.append((pair_id, 1, p, 0.9))
    gt = {"info": {}, "images": images, "annotations": anns, "categories": cats}
    rows = [{"image_id": pid, "category_id": c, "segmentation": _rle(mask_util, p), "score": s}
            for pid, c, p, s in preds]
    return gt, rows, pairs


def run_cgf1(mods_cgf1, gt_path, pred_path):
    """SAM3's CGF1Evaluator; also records each pair's kept counts and matched IoUs (by wrapping
    evaluateImg and the module's linear_sum_assignment; the values are SAM3's)."""
    import numpy as np
    cg = mods_cgf1
    per_pair, last = {}, {}
    real_lsa, real_eval_img = cg.linear_sum_assignment, cg.CGF1Eval.evaluateImg

    def lsa(cost, *a, **k):
        r, c = real_lsa(cost, *a, **k)
        last["scores"] = (-cost)[r, c]
        return r, c

    def eval_img(self, imgId, catId, aRng, maxDet):
        last.clear()
        res = real_eval_img(self, imgId, catId, aRng, maxDet)
        n_gt = sum(1 for cId in self.params.catIds for x in self._gts[imgId, cId] if not x["ignore"])
        per_pair[imgId] = {"gt": n_gt, "dt": int(res["num_dt"]),
                           "ious": sorted([float(v) for v in last.get("scores", [])], reverse=True),
                           "tp": [int(v) for v in res.get("TPs", np.zeros(10, int))]}
        return res

    cg.linear_sum_assignment, cg.CGF1Eval.evaluateImg = lsa, eval_img
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            ev = cg.CGF1Evaluator(gt_path=str(gt_path))
            summary = ev.evaluate(str(pred_path))
    finally:
        cg.linear_sum_assignment, cg.CGF1Eval.evaluateImg = real_lsa, real_eval_img
    e = ev.coco_evals[0].eval
    acc = {k: [float(v) for v in np.asarray(e[k]).reshape(-1)] for k in
           ("TPs", "FPs", "positive_micro_FPs", "FNs", "positive_micro_F1", "cgF1", "IL_MCC")}
    return summary, acc, per_pair, [float(t) for t in ev.coco_evals[0].params.iouThrs]


def cgf1_cases(out, mask_util, cgf1_mod):
    import numpy as np
    rng = np.random.default_rng(1313)
    out.mkdir(parents=True, exist_ok=True)
    index = []
    for name, n_images, variant in [("mixed_a", 8, "mixed"), ("mixed_b", 10, "mixed"), ("all_present", 5, "all_present"),
                                    ("no_predictions", 4, "no_predictions"), ("thresholds", 3, "thresholds")]:
        gt, rows, pairs = cgf1_scenario(mask_util, rng, n_images, variant)
        gt_path, pred_path = out / f"{name}_gt.json", out / f"{name}_pred.json"
        gt_path.write_text(json.dumps(gt))
        pred_path.write_text(json.dumps(rows))
        summary, acc, per_pair, thresholds = run_cgf1(cgf1_mod, gt_path, pred_path)
        (out / f"{name}_sam3.json").write_text(json.dumps(
            {"summary": summary, "accumulated": acc, "iou_thresholds": thresholds,
             "pairs": [dict(image_id=pid, category_id=c, **per_pair[pid]) for pid, c in pairs]}, indent=1))
        index.append(name)
        print(f"  cgF1 {name}: {len(pairs)} pairs, {len(rows)} predictions, SAM3 cgF1 "
              f"{summary['cgF1_eval_segm_cgF1']:.4f}", flush=True)
    (out / "index.json").write_text(json.dumps(index))


# ------------------------------------------------------------------------------------------------

def child(out):
    import torch
    torch.set_num_threads(2)
    t0 = time.time()
    sam3_src, _ = ref_sources.sam3()
    cgf1_out = out / "cgf1"
    mask_util, why_coco = ref_sources.pycocotools(out.parent)  # before the shims: the real one wins
    mods, applied = import_sam3_pieces(sam3_src)
    g = torch.Generator().manual_seed(1313)
    torch.save(loss_cases(mods, sam3_src, g), out / "losses.pt")
    torch.save({"cases": post_cases(mods, g)}, out / "post.pt")
    if mask_util is None:
        ref_sources.skip(cgf1_out, f"SAM3 cgF1 parity: {why_coco}")
    else:
        ref_sources.unskip(cgf1_out)
        import sam3.eval.cgf1_eval as cgf1_mod
        cgf1_cases(cgf1_out, mask_util, cgf1_mod)
    (out / "provenance.json").write_text(json.dumps({"sam3_src": str(sam3_src), "shims": applied}, indent=1))
    print(f"sam3_ref fixtures in {time.time() - t0:.1f} s", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.child:
        child(out)
        return
    src, why = ref_sources.sam3()
    if src is None:
        ref_sources.skip(out, f"SAM3 parity: {why}")
        return
    ref_sources.unskip(out)
    r = subprocess.run([sys.executable, str(pathlib.Path(__file__).resolve()), "--out", str(out), "--child"])
    if r.returncode != 0:
        raise RuntimeError(f"fixtures_sam3_ref.py: the SAM3 reference run failed (exit {r.returncode})")


if __name__ == "__main__":
    main()
