#!/usr/bin/env python3
"""AdamW reference (torch.optim.AdamW, decay only on >=2-D non-embedding params) for
tests/unit/test_optim.cpp: initial params, per-step grads and LRs, params after every step."""
import argparse
import torch

ap = argparse.ArgumentParser()
ap.add_argument("--out", required=True)
out = ap.parse_args().out
g = torch.Generator().manual_seed(0)
names = ["blocks.0.mlp.fc1.weight", "blocks.0.mlp.fc1.bias", "pos_embed", "norm.weight"]
shapes = [(4, 3), (4,), (1, 5, 3), (3,)]
init = {n: torch.randn(s, generator=g) for n, s in zip(names, shapes)}
params = {n: t.clone().requires_grad_(True) for n, t in init.items()}
decay = [params[names[0]]]
no_decay = [params[n] for n in names[1:]]
opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
                        lr=1.0, betas=(0.9, 0.99), eps=1e-8)
steps, lrs, grads, after = 5, [1e-2, 3e-2, 2e-2, 1e-2, 5e-3], [], []
for k in range(steps):
    for pg in opt.param_groups:
        pg["lr"] = lrs[k]
    gk = {n: torch.randn(s, generator=g) for n, s in zip(names, shapes)}
    for n in names:
        params[n].grad = gk[n].clone()
    opt.step()
    grads.append(gk)
    after.append({n: params[n].detach().clone() for n in names})
torch.save({"names": names, "init": init, "lrs": lrs, "grads": grads, "after": after}, f"{out}/adamw.pt")
print("optim fixtures written")
