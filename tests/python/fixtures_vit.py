#!/usr/bin/env python3
"""Fixtures for the C++ ViT parity tests (tests/unit/test_vit.cpp):
- vitb224.pt: InstinctSAM trunk file {'trunk','backbone','model_name'} of a ViT-B/16 (width 768,
  depth 12) at 224 px whose 14x14 grid is resized to 16x16 with 64 output channels, random weights;
  vitb224_io.pt: {'input': (2,3,224,224), 'output': (2,64,16,16)} from the Python reference (eval mode);
- vitb1008_keys.json: name -> shape of the real vit_base preset (1008 px, 1024 ch, 72 grid);
- timm_tiny.pt: ImageNet-style timm keys (no prefix, with classifier head, pos_embed at 7x7) and the
  expected pos_embed after resampling to 14x14 as timm does when it loads pretrained weights at another
  img_size (resample_abs_pos_embed: bicubic with antialias), computed here with plain torch; the
  checks against timm itself are in fixtures_timm.py (test_timm_parity.cpp)."""
import argparse, json, os, sys
import torch
import torch.nn.functional as F
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ref_vit import StudentTrunk, randomize_

ap = argparse.ArgumentParser()
ap.add_argument("--out", required=True)
out = ap.parse_args().out
torch.set_num_threads(2)

m = randomize_(StudentTrunk(out_channels=64, out_grid=16, width=768, img_size=224, patch=16, depth=12, heads=12), 1).eval()
x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(2))
with torch.no_grad():
    y = m(x)
torch.save({"trunk": dict(m.state_dict()), "backbone": "vit_base", "model_name": "base"}, f"{out}/vitb224.pt")
torch.save({"input": x, "output": y}, f"{out}/vitb224_io.pt")

big = StudentTrunk(out_channels=1024, out_grid=72, width=768, img_size=1008, patch=16, depth=12, heads=12)
json.dump({k: list(v.shape) for k, v in big.state_dict().items()}, open(f"{out}/vitb1008_keys.json", "w"))
del big

# timm ImageNet-style file for a tiny ViT at 112 px (7x7 grid), resampled to a 224 px student (14x14).
t = randomize_(StudentTrunk(out_channels=32, out_grid=14, width=96, img_size=112, patch=16, depth=2, heads=2), 3)
sd = {k[len("model.backbone.model."):]: v for k, v in t.state_dict().items() if k.startswith("model.backbone.model.")}
sd["head.weight"] = torch.zeros(10, 96)
sd["head.bias"] = torch.zeros(10)
pos = sd["pos_embed"]
grid = pos[:, 1:].reshape(1, 7, 7, 96).permute(0, 3, 1, 2)
grid = F.interpolate(grid, size=(14, 14), mode="bicubic", align_corners=False, antialias=True)
expected = torch.cat([pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, 196, 96)], 1)
torch.save({"model": sd}, f"{out}/timm_tiny.pt")
torch.save({"pos_embed": expected, "blocks.1.mlp.fc2.weight": sd["blocks.1.mlp.fc2.weight"]}, f"{out}/timm_tiny_expected.pt")
print("vit fixtures written")
