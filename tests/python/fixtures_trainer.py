#!/usr/bin/env python3
"""Independent Python references for the training loop's pieces (tests/unit/test_trainer_parts.cpp),
written from docs/stageA.md and the reference recipe, not from the C++:

- stage_a_loss.pt: feature-distillation cases (student, teacher (B,C,G,G), the pixel-level valid mask
  of a longest_pad batch (B,S,S) or none, weights w_cos / w_mse) and the expected grid-level valid
  mask (a location is valid when more than half of its S/G x S/G cell is), cos term = mean over valid
  locations of (1 - channel cosine), mse term = mean over valid locations of the channel-summed squared
  error, total = w_cos cos + w_mse mse, the mean valid cosine, and the gradient of the total with
  respect to the student (autograd), all in float64;
- schedule.json: step plans (micro-batches per optimizer step, total / warm-up steps from max_steps /
  warmup_steps or from epochs, peak LR scaled by the global batch) and the LR of every step (linear
  warm-up from warmup_lr to the peak, then cosine to min_lr, flat at min_lr after the end). With timm
  ($INSTINCT_TIMM_SRC) the LRs are also checked here against timm's CosineLRScheduler (warmup_prefix,
  per-update stepping), the scheduler InstinctSAM / EfficientSAM3 train with;
- resume.json: positions of an interrupted epoch re-expressed for another number of images per
  micro-batch (another batch size or world size): continue after the images already consumed."""
import argparse
import json
import math
import os
import pathlib
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ref_sources  # noqa: E402


def stage_a_cases():
    g = torch.Generator().manual_seed(7)
    cases = []
    for name, (B, C, G, S, pad, w_cos, w_mse) in {
        "no_mask": (2, 8, 6, 0, None, 1.0, 1.0),
        "longest_pad_wide": (3, 16, 8, 64, "wide", 0.7, 0.3),
        "longest_pad_tall": (2, 8, 7, 56, "tall", 1.0, 0.05),
        "odd_cells": (2, 4, 5, 32, "mixed", 2.0, 0.5),
    }.items():
        student = torch.randn(B, C, G, G, generator=g, dtype=torch.float64)
        teacher = torch.randn(B, C, G, G, generator=g, dtype=torch.float64) + 0.3 * student
        case = {"name": name, "student": student, "teacher": teacher,
                "w": torch.tensor([w_cos, w_mse], dtype=torch.float64)}
        valid = None
        if pad:
            pix = torch.zeros(B, S, S, dtype=torch.bool)
            for b in range(B):  # content at the top-left, as longest_pad places it
                frac = [0.55, 0.8, 0.3][b % 3]
                h, w = (int(S * frac), S) if pad == "wide" else (S, int(S * frac)) if pad == "tall" else \
                    (S - 3 - 5 * b, int(S * frac) + 1)
                pix[b, :h, :w] = True
            case["pixel_valid"] = pix
            # a cell is valid when more than half of its pixels are (cells of S/G pixels; S/G may be fractional)
            valid = torch.zeros(B, G, G, dtype=torch.bool)
            for i in range(G):
                for j in range(G):
                    y0, y1 = math.floor(i * S / G), math.ceil((i + 1) * S / G)
                    x0, x1 = math.floor(j * S / G), math.ceil((j + 1) * S / G)
                    valid[:, i, j] = pix[:, y0:y1, x0:x1].double().mean((1, 2)) > 0.5
            case["valid"] = valid
        s = student.clone().requires_grad_(True)
        cos = F.cosine_similarity(s, teacher, dim=1, eps=1e-8)
        se = ((s - teacher) ** 2).sum(1)
        wgt = valid.double() if valid is not None else torch.ones_like(cos)
        n = wgt.sum().clamp_min(1)
        cos_term = ((1 - cos) * wgt).sum() / n
        mse_term = (se * wgt).sum() / n
        total = w_cos * cos_term + w_mse * mse_term
        total.backward()
        case.update({"cos_term": cos_term.detach(), "mse_term": mse_term.detach(), "total": total.detach(),
                     "cosine": ((cos * wgt).sum() / n).detach(), "grad": s.grad})
        cases.append(case)
    return cases


def plan(o, batches_per_epoch, batch_size):
    accum = max(1, o["accum_steps"])
    per_epoch = max(1, batches_per_epoch // accum)  # a trailing partial step is not taken
    total = o["max_steps"] if o["max_steps"] > 0 else math.ceil(o["epochs"] * per_epoch)
    warm = o["warmup_steps"] if o["warmup_steps"] > 0 else int(o["warmup_epochs"] * per_epoch)
    return {"accum": accum, "total_steps": total, "warmup_steps": warm,
            "peak_lr": o["base_lr"] * batch_size * accum / o["base_batch"]}


def lr(step, p, o):
    if step < p["warmup_steps"]:
        return o["warmup_lr"] + (p["peak_lr"] - o["warmup_lr"]) * step / max(p["warmup_steps"], 1)
    t = min(1.0, (step - p["warmup_steps"]) / max(p["total_steps"] - p["warmup_steps"], 1))
    return o["min_lr"] + 0.5 * (p["peak_lr"] - o["min_lr"]) * (1 + math.cos(math.pi * t))


def schedule_cases(timm):
    base = {"base_lr": 1e-3, "base_batch": 512, "warmup_lr": 1e-6, "min_lr": 1e-5, "epochs": 50.0,
            "warmup_epochs": 5.0, "max_steps": 0, "warmup_steps": 0, "accum_steps": 1}
    cases = []
    for name, over, bpe, bs in [
        ("epochs", {"epochs": 3.0, "warmup_epochs": 1.0}, 40, 16),
        ("fractional_epochs", {"epochs": 2.5, "warmup_epochs": 0.5}, 37, 8),
        ("accumulation", {"epochs": 2.0, "warmup_epochs": 0.5, "accum_steps": 3}, 50, 4),
        ("accum_partial_step", {"epochs": 1.0, "warmup_epochs": 0.0, "accum_steps": 4}, 3, 2),
        ("max_steps", {"max_steps": 90, "warmup_steps": 10, "base_lr": 2e-4, "base_batch": 64}, 1000, 32),
        ("no_warmup", {"max_steps": 25, "warmup_epochs": 0.0, "min_lr": 0.0}, 10, 8),
        ("warmup_whole_run", {"max_steps": 12, "warmup_steps": 12}, 10, 8),
    ]:
        o = {**base, **over}
        p = plan(o, bpe, bs)
        steps = list(range(p["total_steps"] + 3))  # past the end: flat at min_lr
        lrs = [lr(s, p, o) for s in steps]
        if timm is not None and p["total_steps"] > p["warmup_steps"]:
            from timm.scheduler import CosineLRScheduler
            opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=p["peak_lr"])
            sch = CosineLRScheduler(opt, t_initial=p["total_steps"] - p["warmup_steps"], lr_min=o["min_lr"],
                                    warmup_t=p["warmup_steps"], warmup_lr_init=o["warmup_lr"], warmup_prefix=True,
                                    t_in_epochs=False, cycle_limit=1)
            by_timm = [sch._get_lr(s)[0] for s in steps]
            worst = max(abs(a - b) / p["peak_lr"] for a, b in zip(lrs, by_timm))
            assert worst < 1e-12, f"{name}: timm's CosineLRScheduler differs by {worst}"
        cases.append({"name": name, "optim": o, "batches_per_epoch": bpe, "batch_size": bs, "plan": p, "lr": lrs})
    return cases


def resume_cases():
    cases = []
    for saved_ipb, ipb, batch_in_epoch in [(16, 16, 7), (16, 8, 7), (16, 32, 7), (12, 20, 5), (0, 8, 9), (16, 8, 0),
                                           (24, 16, 1)]:
        if saved_ipb > 0 and saved_ipb != ipb and batch_in_epoch > 0:
            seen = batch_in_epoch * saved_ipb
            expected = seen // ipb  # whole new batches already consumed; the remainder is re-used
        else:
            expected = batch_in_epoch
        cases.append({"saved_images_per_batch": saved_ipb, "images_per_batch": ipb,
                      "batch_in_epoch": batch_in_epoch, "expected_batch_in_epoch": expected})
    return cases


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    out = pathlib.Path(ap.parse_args().out)
    out.mkdir(parents=True, exist_ok=True)
    torch.save({"cases": stage_a_cases()}, out / "stage_a_loss.pt")
    timm, why = ref_sources.timm()
    if timm is None:
        print(f"fixtures_trainer: LR schedule not cross-checked with timm ({why})")
    (out / "schedule.json").write_text(json.dumps(schedule_cases(timm)))
    (out / "resume.json").write_text(json.dumps(resume_cases()))
    print("fixtures_trainer: stage A loss, schedule and resume cases written")


if __name__ == "__main__":
    main()
