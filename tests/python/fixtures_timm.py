#!/usr/bin/env python3
"""Fixtures for tests/unit/test_timm_parity.cpp, every expectation computed by the real timm
($INSTINCT_TIMM_SRC; without it this writes SKIPPED and the tests skip). Models are built with
pretrained=False and seeded random weights; everything runs in fp32 on the CPU.

- keys.json: per student preset, timm's state_dict names and shapes, in order, of the model the preset stands
  for (vit_base_patch16_224 at 1008 / 1152, vit_small_patch16_224 and vit_tiny_patch16_224 at 1008;
  num_classes=0, global_pool='': no classifier, no fc_norm).
- forward.json + forward_<name>.pt: {'trunk': the timm weights under InstinctSAM's trunk names
  (model.backbone.model.*) plus an adapter head (torch.nn Conv1x1 / BatchNorm2d (non-trivial running
  statistics) / GELU / Conv3x3), 'input', 'features': timm's forward_features(input), 'output':
  adapter(features without CLS) resized bilinearly to out_grid}. Every preset architecture at 224
  (12 blocks, batch 2); at full size (batch 1) ViT-Ti at 1152 with 4 blocks and ViT-B at 1008 with 2
  blocks (a 12-block ViT-B at 1008 takes 2 minutes in Python here; the blocks are identical, what
  changes with size is the grid); custom architectures (patch 8, odd widths, mlp_ratio 2.5 and 3).
- init.json + init_<name>.pt / init_<name>_expected.pt: an ImageNet-style checkpoint written by
  timm at one resolution (torch.save(model.state_dict()), classifier included) and what timm itself
  makes of it at the student's resolution: timm.create_model(..., pretrained=True,
  pretrained_cfg_overlay={'file': ckpt}, img_size=..., num_classes=0), i.e. its own
  checkpoint_filter_fn (pos_embed resample with antialias, patch-embed resample, no_embed_class) and
  classifier removal. Expected: that model's state_dict, an input and its forward_features.
  Register tokens: a checkpoint the student must refuse.
- resample.pt: timm's resample_abs_pos_embed on non-square old / new grids and 0 / 1 / 5 prefix
  tokens, and resample_patch_embed on non-square kernels."""
import argparse
import json
import os
import pathlib
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ref_sources  # noqa: E402

PRESETS = {  # our preset -> (timm model, img_size)
    "vit_base": ("vit_base_patch16_224", 1008),
    "vit_base_1152": ("vit_base_patch16_224", 1152),
    "vit_small": ("vit_small_patch16_224", 1008),
    "vit_tiny": ("vit_tiny_patch16_224", 1008),
}
PREFIX = "model.backbone.model."


def randomize(model, seed):
    """Seeded random values for every parameter and buffer, far from timm's init (non-zero biases,
    non-unit norms), so a wrongly wired tensor cannot hide."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            scale = 0.02 if p.dim() > 1 else 0.1
            p.copy_(torch.randn(p.shape, generator=g) * scale + (1.0 if name.endswith("norm1.weight")
                                                                   or name.endswith("norm2.weight")
                                                                   or name.endswith("norm.weight") else 0.0))
        for name, b in model.named_buffers():
            if name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g) + 0.5)
            elif name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=g) * 0.1)
    return model


def adapter(width, out_channels):
    """EfficientSAM3's adapter head (model.head.{0,1,2,3})."""
    return nn.Sequential(nn.Conv2d(width, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels), nn.GELU(),
                         nn.Conv2d(out_channels, out_channels, 3, padding=1))


def forward_case(timm, out, name, model_name, img_size, batch, out_channels, out_grid, seed, config, **kw):
    t0 = time.time()
    m = timm.create_model(model_name, pretrained=False, img_size=img_size, num_classes=0, global_pool="", **kw)
    m = randomize(m, seed).eval()
    head = randomize(adapter(m.embed_dim, out_channels), seed + 1).eval()
    x = torch.randn(batch, 3, img_size, img_size, generator=torch.Generator().manual_seed(seed + 2))
    with torch.no_grad():
        feats = m.forward_features(x)
        g = img_size // m.patch_embed.patch_size[0]
        grid = feats[:, 1:].transpose(1, 2).reshape(batch, m.embed_dim, g, g)
        y = head(grid)
        if out_grid != g:
            y = F.interpolate(y, size=(out_grid, out_grid), mode="bilinear", align_corners=False)
    trunk = {PREFIX + k: v for k, v in m.state_dict().items()}
    trunk.update({"model.head." + k: v for k, v in head.state_dict().items()})
    torch.save({"trunk": trunk, "input": x, "features": feats, "output": y}, out / f"forward_{name}.pt")
    print(f"fixtures_timm: forward {name} ({model_name} at {img_size}, batch {batch}) {time.time() - t0:.1f} s",
          flush=True)
    return {"name": name, "timm_model": model_name, "config": {**config, "img_size": img_size,
                                                             "out_channels": out_channels, "out_grid": out_grid}}


def init_case(timm, out, name, model_name, src_kw, dst_kw, student, seed, refuse=None):
    """A checkpoint saved by timm with src_kw, loaded by timm into a model with dst_kw."""
    src = randomize(timm.create_model(model_name, pretrained=False, **src_kw), seed)
    ckpt = out / f"init_{name}.pt"
    torch.save(src.state_dict(), ckpt)
    case = {"name": name, "timm_model": model_name, "student": student, "src": src_kw, "dst": dst_kw}
    if refuse:
        case["refuse"] = refuse
        return case
    dst = timm.create_model(model_name, pretrained=True, pretrained_cfg_overlay={"file": str(ckpt), "custom_load": False},
                            num_classes=0, global_pool="", **dst_kw).eval()
    x = torch.randn(2, 3, student["img_size"], student["img_size"], generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        feats = dst.forward_features(x)
    torch.save({"state": dict(dst.state_dict()), "input": x, "features": feats}, out / f"init_{name}_expected.pt")
    case["no_embed_class"] = bool(getattr(dst, "no_embed_class", False))
    return case


def resample_cases(timm_layers):
    g = torch.Generator().manual_seed(11)
    cases = []
    for old, new, prefix in [((7, 7), (9, 12), 1), ((5, 8), (10, 6), 0), ((6, 6), (6, 6), 1), ((4, 4), (8, 8), 5),
                             ((14, 14), (63, 63), 1), ((3, 9), (3, 9), 0), ((8, 8), (4, 4), 1)]:
        pos = torch.randn(1, prefix + old[0] * old[1], 24, generator=g)
        old_arg = list(old) if old[0] != old[1] else None
        exp = timm_layers.resample_abs_pos_embed(pos, new_size=list(new), old_size=old_arg, num_prefix_tokens=prefix)
        cases.append({"pos": pos, "new": torch.tensor(new), "old": torch.tensor(old if old_arg else (0, 0)),
                      "prefix": torch.tensor(prefix), "expected": exp})
    patches = []
    for old, new in [((8, 8), (16, 16)), ((14, 14), (16, 16)), ((16, 16), (14, 14)), ((4, 6), (8, 5))]:
        w = torch.randn(5, 3, *old, generator=g)
        patches.append({"weight": w, "new": torch.tensor(new), "expected": timm_layers.resample_patch_embed(w, list(new))})
    return {"pos": cases, "patch": patches}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--quick", action="store_true", help="skip the full-size forward cases")
    args = ap.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    timm, why = ref_sources.timm()
    if timm is None:
        ref_sources.skip(out, f"timm parity: {why}")
        return
    ref_sources.unskip(out)
    torch.set_num_threads(2)
    import timm.layers as timm_layers
    t0 = time.time()

    keys = {}
    for preset, (model_name, img) in PRESETS.items():
        m = timm.create_model(model_name, pretrained=False, img_size=img, num_classes=0, global_pool="")
        keys[preset] = {"timm_model": model_name, "img_size": img,
                        "keys": [[k, list(v.shape)] for k, v in m.state_dict().items()]}
        del m
    (out / "keys.json").write_text(json.dumps(keys))

    forward = []
    forward.append(forward_case(timm, out, "tiny224", "vit_tiny_patch16_224", 224, 2, 32, 16, 1, {"preset": "vit_tiny"}))
    forward.append(forward_case(timm, out, "small224", "vit_small_patch16_224", 224, 2, 48, 14, 2, {"preset": "vit_small"}))
    forward.append(forward_case(timm, out, "base224", "vit_base_patch16_224", 224, 2, 64, 16, 3, {"preset": "vit_base"}))
    forward.append(forward_case(timm, out, "custom_p8", "vit_tiny_patch16_224", 64, 3, 16, 5, 4,
                                {"preset": "custom", "patch": 8, "width": 96, "depth": 3, "heads": 3, "mlp_ratio": 2.5},
                                patch_size=8, embed_dim=96, depth=3, num_heads=3, mlp_ratio=2.5))
    forward.append(forward_case(timm, out, "custom_w80", "vit_tiny_patch16_224", 96, 2, 8, 6, 5,
                                {"preset": "custom", "patch": 16, "width": 80, "depth": 2, "heads": 5, "mlp_ratio": 3.0},
                                embed_dim=80, depth=2, num_heads=5, mlp_ratio=3.0))
    if not args.quick:  # full size: ViT-Ti at 1152 (native 72x72 grid) and ViT-B's blocks at 1008, 2 deep
        forward.append(forward_case(timm, out, "tiny1152_d4", "vit_tiny_patch16_224", 1152, 1, 32, 72, 6,
                                    {"preset": "custom", "patch": 16, "width": 192, "depth": 4, "heads": 3,
                                     "mlp_ratio": 4.0}, depth=4))
        forward.append(forward_case(timm, out, "base1008_d2", "vit_base_patch16_224", 1008, 1, 64, 72, 7,
                                    {"preset": "custom", "patch": 16, "width": 768, "depth": 2, "heads": 12,
                                     "mlp_ratio": 4.0}, depth=2))
    (out / "forward.json").write_text(json.dumps(forward))

    tiny = {"preset": "custom", "patch": 16, "width": 192, "depth": 12, "heads": 3, "mlp_ratio": 4.0,
            "out_channels": 16, "out_grid": 14}
    small = {"preset": "custom", "patch": 16, "width": 64, "depth": 2, "heads": 2, "mlp_ratio": 4.0,
             "out_channels": 16, "out_grid": 8}
    arch = dict(embed_dim=64, depth=2, num_heads=2)
    init = [
        init_case(timm, out, "tiny_224_to_1008", "vit_tiny_patch16_224", {"img_size": 224}, {"img_size": 1008},
                  {**tiny, "img_size": 1008, "out_grid": 63}, 21),
        init_case(timm, out, "small_112_to_224", "vit_tiny_patch16_224", {"img_size": 112, **arch},
                  {"img_size": 224, **arch}, {**small, "img_size": 224}, 22),
        init_case(timm, out, "small_224_to_128_down", "vit_tiny_patch16_224", {"img_size": 224, **arch},
                  {"img_size": 128, **arch}, {**small, "img_size": 128}, 23),
        init_case(timm, out, "no_embed_class_112_to_224", "vit_tiny_patch16_224",
                  {"img_size": 112, "no_embed_class": True, **arch}, {"img_size": 224, "no_embed_class": True, **arch},
                  {**small, "img_size": 224}, 24),
        init_case(timm, out, "patch8_112_to_patch16_224", "vit_tiny_patch16_224",
                  {"img_size": 112, "patch_size": 8, **arch}, {"img_size": 224, **arch}, {**small, "img_size": 224}, 25),
        init_case(timm, out, "same_size", "vit_tiny_patch16_224", {"img_size": 128, **arch}, {"img_size": 128, **arch},
                  {**small, "img_size": 128}, 26),
        init_case(timm, out, "registers", "vit_tiny_patch16_224",
                  {"img_size": 112, "reg_tokens": 4, "no_embed_class": True, **arch}, None,
                  {**small, "img_size": 224}, 27, refuse="reg_token"),
    ]
    (out / "init.json").write_text(json.dumps(init))
    torch.save(resample_cases(timm_layers), out / "resample.pt")
    print(f"fixtures_timm: {len(keys)} presets, {len(forward)} forward, {len(init)} init cases in "
          f"{time.time() - t0:.1f} s", flush=True)


if __name__ == "__main__":
    main()
