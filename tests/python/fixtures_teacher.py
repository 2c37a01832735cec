#!/usr/bin/env python3
"""Teacher-bundle fixtures for tests/unit/test_bundle.cpp, written under --out (FIXTURES/teacher):

  bundle/                 reference teacher (tiny preset, seed 0), all six modules
  reference.pt            plain dict: fixed inputs and the EAGER model's outputs (C++ checks the
                          TorchScript files against these to 1e-5)
  broken_grid/            bundle.json says grid 8 / patch 28 / mask 32 (still self-consistent), trunk.pt gives 16
  broken_missing/         bundle.json lists trunk.pt, which is absent
  broken_hash/            trunk.pt's sha256 in bundle.json is wrong
  broken_script/          trunk.pt is not TorchScript (its sha256 matches, so loading is what fails)
  sha/data.bin, sha/data.bin.sha256   1,000,003 seeded bytes and their hashlib hex digest
"""
import argparse
import hashlib
import json
import pathlib
import shutil
import sys
import time

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "scripts"))
import make_reference_teacher as mrt  # noqa: E402


def broken_copy(src, dst, edit_json=None, edit_dir=None):
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    for name in ("bundle.json", "trunk.pt"):
        shutil.copy(src / name, dst / name)
    info = json.loads((dst / "bundle.json").read_text())
    if edit_dir:
        edit_dir(dst, info)
    if edit_json:
        edit_json(info)
    (dst / "bundle.json").write_text(json.dumps(info, indent=2) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()

    mods, info = mrt.build("tiny", 0)
    bundle = out / "bundle"
    if bundle.exists():
        shutil.rmtree(bundle)
    info = mrt.write_bundle(bundle, mods, info, verify=True)

    # Eager reference outputs on fixed inputs (B=2): the chain a trainer runs.
    gen = torch.Generator().manual_seed(42)
    S = info["image_size"]
    ref = {"pixels": mrt.synthetic_images(2, S, seed=3)}
    ref["ids"] = torch.tensor([2, 7], dtype=torch.long)
    ref["points"] = torch.tensor([[[60.0, 80.0], [150.0, 40.0], [0.0, 0.0]],
                                  [[20.0, 30.0], [200.0, 190.0], [112.0, 112.0]]])
    ref["labels"] = torch.tensor([[1, 0, -1], [2, 3, 1]], dtype=torch.long)
    with torch.no_grad():
        ref["feats"] = mods["trunk"](ref["pixels"])
        ref["fpn0"], ref["fpn1"], ref["fpn2"] = mods["detector_neck"](ref["feats"])
        ref["emb"], ref["s0"], ref["s1"] = mods["interactive_neck"](ref["feats"])
        ref["text"], ref["text_pad"] = mods["concept_bank"](ref["ids"])
        g = mods["grounding"](ref["fpn0"], ref["fpn1"], ref["fpn2"], ref["text"], ref["text_pad"])
        for k, v in zip(("logits", "boxes", "masks", "presence", "memory", "queries"), g):
            ref["g_" + k] = v
        s = mods["sam_head"](ref["emb"], ref["s0"], ref["s1"], ref["points"], ref["labels"])
        for k, v in zip(("masks", "iou", "obj"), s):
            ref["sam_" + k] = v
    del gen
    torch.save({k: v.contiguous() for k, v in ref.items()}, str(out / "reference.pt"))

    def grid(i):
        i["trunk"]["grid"], i["trunk"]["patch"], i["mask_size"] = 8, 28, 32

    def missing(d, i):
        (d / "trunk.pt").unlink()

    def bad_hash(i):
        i["modules"]["trunk"]["sha256"] = hashlib.sha256(b"not the trunk").hexdigest()

    def bad_script(d, i):
        (d / "trunk.pt").write_bytes(b"this is not a TorchScript archive\n")
        i["modules"]["trunk"]["sha256"] = mrt.sha256_file(d / "trunk.pt")

    broken_copy(bundle, out / "broken_grid", edit_json=grid)
    broken_copy(bundle, out / "broken_missing", edit_dir=missing)
    broken_copy(bundle, out / "broken_hash", edit_json=bad_hash)
    broken_copy(bundle, out / "broken_script", edit_dir=bad_script)

    sha = out / "sha"
    sha.mkdir(exist_ok=True)
    data = torch.randint(0, 256, (1_000_003,), generator=torch.Generator().manual_seed(5),
                         dtype=torch.uint8).numpy().tobytes()
    (sha / "data.bin").write_bytes(data)
    (sha / "data.bin.sha256").write_text(hashlib.sha256(data).hexdigest() + "\n")
    print(f"fixtures_teacher: wrote {out} in {time.time() - t0:.1f}s", flush=True)


if __name__ == "__main__":
    main()
