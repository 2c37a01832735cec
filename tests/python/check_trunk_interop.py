#!/usr/bin/env python3
"""A C++-written InstinctSAM trunk file loads in Python with weights_only=True, strictly into the
reference timm-architecture ViT + adapter head, and reproduces the C++ forward pass."""
import os, subprocess, sys, tempfile
import torch
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ref_vit import StudentTrunk

with tempfile.TemporaryDirectory() as d:
    exe = os.path.join(os.environ["INSTINCT_BIN_DIR"], "tests", "instinct_tests")
    subprocess.run([exe, "--gtest_also_run_disabled_tests", "--gtest_filter=VitInterop.DISABLED_WriteForPython"],
                   check=True, env={**os.environ, "INSTINCT_IO_OUT": d}, stdout=subprocess.DEVNULL)
    f = torch.load(os.path.join(d, "trunk.pt"), weights_only=True)
    assert set(f.keys()) == {"trunk", "backbone", "model_name"}, f.keys()
    assert f["backbone"] == "vit_custom" and f["model_name"] == "custom", (f["backbone"], f["model_name"])
    m = StudentTrunk(out_channels=32, out_grid=8, width=64, img_size=96, patch=16, depth=2, heads=4)
    m.load_state_dict(f["trunk"], strict=True)
    m.eval()
    io = torch.load(os.path.join(d, "io.pt"), weights_only=True)
    with torch.no_grad():
        y = m(io["input"])
    err = (y - io["output"]).abs().max().item()
    assert err <= 1e-4, f"Python forward differs from C++ by {err}"
    assert f["trunk"]["model.head.1.num_batches_tracked"].item() == 1
    print(f"ok: {len(f['trunk'])} tensors, max abs diff {err:.2e}")
