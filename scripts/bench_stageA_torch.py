#!/usr/bin/env python3
"""The PyTorch reference loop for the GPU Stage-A benchmark, and the MFU of both sides.

  python3 scripts/bench_stageA_torch.py --teacher BUNDLE [--batch 16] [--steps 30] [--window 5]
        [--cpp-metrics RUN/metrics.jsonl] [--out results.json]

What instinct-train stageA does per step, written the way a PyTorch user would (torch 2.x):
teacher = the bundle's TorchScript trunk.pt (eval, no grad, bf16 autocast); student = timm's
vit_base_patch16_224 at the teacher's input size (fused SDPA attention) + EfficientSAM3's adapter
head (Conv1x1, BatchNorm, GELU, Conv3x3) + bilinear resize to the teacher grid; loss = (1 - channel
cosine) + channel-summed squared error; AdamW(fused=True) with no decay on 1-D parameters,
clip_grad_norm_(5), EMA of the weights (torch._foreach_lerp_), bf16 autocast. Inputs are random
normalised images generated on the GPU once (no data loading: an upper bound for the loop).
Throughput = median images/s over windows of --window steps after the first window; FLOPs per image
are counted with torch.utils.flop_counter on one step (teacher forward + student forward/backward)
and MFU is against 790 TFLOP/s (the measured bf16 peak of the H100/H200, ../shared reference).
With --cpp-metrics, the C++ run's images_per_s windows (same skip rule) get the same FLOP count.
"""
import argparse
import json
import math
import pathlib
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

PEAK = 790e12


class Student(nn.Module):
    def __init__(self, img_size, out_channels, out_grid):
        super().__init__()
        import timm
        self.vit = timm.create_model("vit_base_patch16_224", pretrained=False, img_size=img_size, num_classes=0,
                                     global_pool="")
        w = self.vit.embed_dim
        self.head = nn.Sequential(nn.Conv2d(w, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels), nn.GELU(),
                                  nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.out_grid = out_grid

    def forward(self, x):
        t = self.vit.forward_features(x)[:, self.vit.num_prefix_tokens:]
        B, N, W = t.shape
        g = int(math.isqrt(N))
        y = self.head(t.transpose(1, 2).reshape(B, W, g, g))
        if g != self.out_grid:
            y = F.interpolate(y, size=(self.out_grid, self.out_grid), mode="bilinear", align_corners=False)
        return y


def windows_median(values, skip=1):
    v = values[skip:] if len(values) > skip else values
    return statistics.median(v) if v else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--teacher", required=True)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--window", type=int, default=5)
    ap.add_argument("--cpp-metrics", default="")
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    dev = torch.device("cuda")
    info = json.loads((pathlib.Path(a.teacher) / "bundle.json").read_text())
    S, C, G = info["image_size"], info["trunk"]["channels"], info["trunk"]["grid"]
    teacher = torch.jit.load(str(pathlib.Path(a.teacher) / "trunk.pt"), map_location=dev).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    torch.manual_seed(0)
    student = Student(S, C, G).to(dev).train()
    decay, no_decay = [], []
    for n, p in student.named_parameters():
        (no_decay if p.ndim <= 1 or n.endswith(".bias") or "pos_embed" in n or "cls_token" in n else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-4, fused=True)
    params = [p for p in student.parameters()]
    ema = [p.detach().clone() for p in params]
    x = torch.rand(a.batch, 3, S, S, device=dev) * 2 - 1

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            with torch.no_grad():
                t = teacher(x)
            s = student(x)
            sf, tf = s.float(), t.float()
            loss = (1 - F.cosine_similarity(sf, tf, dim=1)).mean() + (sf - tf).pow(2).sum(1).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0, foreach=True)
        opt.step()
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            torch._foreach_lerp_(ema, [p.detach() for p in params], 1 - 0.9998)
        return loss

    from torch.utils.flop_counter import FlopCounterMode
    fc = FlopCounterMode(display=False)
    with fc:
        step()
    flops_per_image = fc.get_total_flops() / a.batch
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    rates = []
    t0 = time.perf_counter()
    for i in range(1, a.steps + 1):
        loss = step()
        if i % a.window == 0:
            torch.cuda.synchronize()
            t1 = time.perf_counter()
            rates.append(a.window * a.batch / (t1 - t0))
            t0 = t1
    res = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "batch": a.batch, "steps": a.steps,
           "flops_per_image": flops_per_image, "python_images_per_s": windows_median(rates), "python_windows": rates,
           "python_peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20, "final_loss": float(loss)}
    res["python_mfu"] = res["python_images_per_s"] * flops_per_image / PEAK
    if a.cpp_metrics:
        rows = [json.loads(l) for l in open(a.cpp_metrics) if '"train"' in l]
        cr = [r["images_per_s"] for r in rows if "images_per_s" in r]
        res["cpp_windows"] = cr
        res["cpp_images_per_s"] = windows_median(cr)
        res["cpp_mfu"] = res["cpp_images_per_s"] * flops_per_image / PEAK
        res["cpp_over_python"] = res["cpp_images_per_s"] / res["python_images_per_s"]
    print(json.dumps(res, indent=1))
    if a.out:
        pathlib.Path(a.out).write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
