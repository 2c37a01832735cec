#!/usr/bin/env python3
"""Forward + backward time of the reference teacher's trainable heads, as train_reference_teacher.py
runs them per shard (docs/performance.md, "Reference teacher training").

  /usr/bin/python3 scripts/bench_reference_heads.py [--pairs 16] [--prompts 48] [--threads 1] [--repeat 12]

Builds make_reference_teacher's `tiny` preset (seed 0), puts the grounding head and the SAM head in
training mode and times one forward + backward of each on random neck features: the grounding head
over --pairs (image, concept) pairs, the SAM head over --prompts one-point prompts. Prints the median
and minimum over --repeat runs after two warm-up runs. Source scripts/cpu_env.sh first to time the
demo's kernels; set OPENBLAS_NUM_THREADS to --threads as the trainer does.
"""
import argparse
import pathlib
import sys
import time

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import make_reference_teacher as mrt  # noqa: E402


def timed(fn, repeat):
    ts = []
    for _ in range(repeat + 2):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    ts = sorted(ts[2:])
    return ts[len(ts) // 2] * 1e3, ts[0] * 1e3


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=16)
    ap.add_argument("--prompts", type=int, default=48)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=12)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    mods, info = mrt.build("tiny", 0)
    D, G, S = info["neck_channels"], info["trunk"]["grid"], info["image_size"]
    g, h = mods["grounding"], mods["sam_head"]
    for m in (g, h):
        m.train()
        for p in m.parameters():
            p.requires_grad_(True)
    gen = torch.Generator().manual_seed(0)
    P, N = a.pairs, a.prompts
    fpn = (torch.randn(P, D, 4 * G, 4 * G, generator=gen), torch.randn(P, D, 2 * G, 2 * G, generator=gen),
           torch.randn(P, D, G, G, generator=gen))
    text, pad = mods["concept_bank"](torch.randint(0, len(mrt.CONCEPTS), (P,), generator=gen))
    emb, s0, s1 = (torch.randn(N, D, G, G, generator=gen), torch.randn(N, D // 8, 4 * G, 4 * G, generator=gen),
                   torch.randn(N, D // 4, 2 * G, 2 * G, generator=gen))
    pts = torch.rand(N, 1, 2, generator=gen) * S
    lab = torch.ones(N, 1, dtype=torch.long)

    def grounding():
        logits, boxes, masks, presence, _, _ = g(*fpn, text, pad)
        (logits.sum() + boxes.sum() + masks.square().mean() + presence.sum()).backward()

    def sam():
        masks, iou, obj = h(emb, s0, s1, pts, lab)
        (masks.square().mean() + iou.sum() + obj.sum()).backward()

    for name, fn, n in (("grounding", grounding, f"{P} pairs"), ("sam_head", sam, f"{N} prompts")):
        med, best = timed(fn, a.repeat)
        print(f"{name:10s} fwd+bwd, {n}, {a.threads} thread(s): median {med:.1f} ms, min {best:.1f} ms")


if __name__ == "__main__":
    main()
