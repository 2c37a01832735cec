#!/usr/bin/env python3
"""Wall time and peak memory of `instinct-merge sam3` on a SAM3-sized checkpoint.

  bench_merge.py [--work DIR] [--size-gb 3.4] [--bin build/instinct-merge] [--repeat 1] [--regen] [--keep-output]

Generates under --work (default /tmp/instinct_bench_merge):
  sam3.pt     {"model": state_dict} of about --size-gb GB with SAM3's key layout: the vision trunk's
              420 tensors under detector.backbone.vision_backbone.trunk. (patch_embed, pos_embed, ln_pre,
              32 blocks with qkv (3072,1024), proj (1024,1024), fc1 (4736,1024), fc2 (1024,4736), norms and
              complex64 freqs_cis (576,32), (5184,32) in the global blocks 7/15/23/31), then filler with
              SAM3-like names and shapes: necks, the 24-layer text encoder, fusion encoder / decoder, scoring,
              segmentation and geometry heads (~1156 detector keys in all) and ~309 tracker keys.
              The trunk has its real shapes whenever it fits (from about 2 GB up); the filler's large
              matrices (>= 1M elements) are shortened or lengthened along dim 0 to reach the size. Below
              that, the trunk's large matrices are shortened too (same keys and dtypes, shapes not real).
  student.pt  an InstinctSAM ViT-B/16 trunk file at 1008 px (width 768, depth 12, 12 heads,
              pos_embed (1,3970,768), adapter head with 1024 output channels), random values.
then runs `instinct-merge sam3 --sam3 sam3.pt --trunk student.pt --output merged.pt` (--repeat times)
and reports wall time and peak RSS (os.wait4 ru_maxrss) of each merge, split into anonymous memory and
mapped file pages (/proc/PID/status, sampled), the file sizes and peak RSS / largest input. Inputs are reused when --work already holds them for the same size (--regen forces
new ones); merged.pt is deleted at the end unless --keep-output. The inputs were usually just written,
so they are in the page cache: the numbers are for warm reads. torch.save needs every tensor in memory
once: generating 3.4 GB takes ~4 GB of RAM. Run with Debian's /usr/bin/python3 (torch).
"""
import argparse
import json
import os
import pathlib
import subprocess
import sys
import time
from collections import OrderedDict

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "python"))

TRUNK = "detector.backbone.vision_backbone.trunk."
VB = "detector.backbone.vision_backbone."
LB = "detector.backbone.language_backbone."
C64 = "complex64"  # dtype marker in the specs (everything else is float32)
BIG = 1 << 20  # tensors with at least this many elements are resized along dim 0 to hit the size


def numel(shape):
    n = 1
    for s in shape:
        n *= s
    return n


def nbytes(shape, dtype):
    return numel(shape) * (8 if dtype == C64 else 4)


def trunk_spec():
    """SAM3's vision trunk: (name, shape, dtype) for all 420 tensors, real shapes."""
    s = [(TRUNK + "patch_embed.proj.weight", (1024, 3, 14, 14), None), (TRUNK + "pos_embed", (1, 577, 1024), None),
         (TRUNK + "ln_pre.weight", (1024,), None), (TRUNK + "ln_pre.bias", (1024,), None)]
    for i in range(32):
        b = f"{TRUNK}blocks.{i}."
        s += [(b + "norm1.weight", (1024,), None), (b + "norm1.bias", (1024,), None),
              (b + "attn.qkv.weight", (3072, 1024), None), (b + "attn.qkv.bias", (3072,), None),
              (b + "attn.proj.weight", (1024, 1024), None), (b + "attn.proj.bias", (1024,), None),
              (b + "attn.freqs_cis", (5184 if i in (7, 15, 23, 31) else 576, 32), C64),
              (b + "norm2.weight", (1024,), None), (b + "norm2.bias", (1024,), None),
              (b + "mlp.fc1.weight", (4736, 1024), None), (b + "mlp.fc1.bias", (4736,), None),
              (b + "mlp.fc2.weight", (1024, 4736), None), (b + "mlp.fc2.bias", (1024,), None)]
    return s


def _lin(name, out_f, in_f, bias=True):
    return [(name + ".weight", (out_f, in_f), None)] + ([(name + ".bias", (out_f,), None)] if bias else [])


def _ln(name, d=256):
    return [(name + ".weight", (d,), None), (name + ".bias", (d,), None)]


def _mha(name, d=256):  # nn.MultiheadAttention
    return [(name + ".in_proj_weight", (3 * d, d), None), (name + ".in_proj_bias", (3 * d,), None)] + _lin(name + ".out_proj", d, d)


def filler_spec():
    """SAM3-like non-trunk tensors: necks, text encoder, grounding heads, tracker (names and shapes approximate)."""
    s = []
    for neck in ("convs", "sam2_convs"):  # ViTDet-style simple FPN, 1024 -> 256, scales 4, 2, 1, 0.5
        n = f"{VB}{neck}."
        s += [(n + "0.dconv_2x2_0.weight", (1024, 512, 2, 2), None), (n + "0.dconv_2x2_0.bias", (512,), None),
              (n + "0.dconv_2x2_1.weight", (512, 256, 2, 2), None), (n + "0.dconv_2x2_1.bias", (256,), None),
              (n + "0.conv_1x1.weight", (256, 256, 1, 1), None), (n + "0.conv_1x1.bias", (256,), None),
              (n + "1.dconv_2x2.weight", (1024, 512, 2, 2), None), (n + "1.dconv_2x2.bias", (512,), None),
              (n + "1.conv_1x1.weight", (256, 512, 1, 1), None), (n + "1.conv_1x1.bias", (256,), None)]
        for i in (2, 3):
            s += [(f"{n}{i}.conv_1x1.weight", (256, 1024, 1, 1), None), (f"{n}{i}.conv_1x1.bias", (256,), None)]
        for i in range(4):
            s += [(f"{n}{i}.conv_3x3.weight", (256, 256, 3, 3), None), (f"{n}{i}.conv_3x3.bias", (256,), None)]
    # text encoder: CLIP-style, 24 layers of width 1024, context 32, resizer 1024 -> 256
    s += [(LB + "encoder.token_embedding.weight", (49408, 1024), None),
          (LB + "encoder.positional_embedding", (32, 1024), None)]
    for i in range(24):
        r = f"{LB}encoder.transformer.resblocks.{i}."
        s += _mha(r + "attn", 1024) + _ln(r + "ln_1", 1024) + _lin(r + "mlp.c_fc", 4096, 1024) + \
            _lin(r + "mlp.c_proj", 1024, 4096) + _ln(r + "ln_2", 1024)
    s += _ln(LB + "encoder.ln_final", 1024) + _lin(LB + "resizer", 256, 1024)
    # fusion encoder and decoder (width 256, FFN 2048)
    for i in range(6):
        e = f"detector.transformer.encoder.layers.{i}."
        s += _mha(e + "self_attn") + _mha(e + "cross_attn_image") + _lin(e + "linear1", 2048, 256) + \
            _lin(e + "linear2", 256, 2048) + _ln(e + "norm1") + _ln(e + "norm2") + _ln(e + "norm3")
    for i in range(6):
        d = f"detector.transformer.decoder.layers.{i}."
        s += _mha(d + "self_attn") + _mha(d + "cross_attn") + _mha(d + "ca_text") + _lin(d + "linear1", 2048, 256) + \
            _lin(d + "linear2", 256, 2048) + _ln(d + "norm1") + _ln(d + "norm2") + _ln(d + "norm3") + _ln(d + "catext_norm")
    d = "detector.transformer.decoder."
    s += [(d + "query_embed.weight", (200, 256), None), (d + "reference_points.weight", (200, 4), None),
          (d + "presence_token.weight", (1, 256), None)] + _ln(d + "norm")
    for i, (o, n) in enumerate(((256, 256), (256, 256), (4, 256))):
        s += _lin(f"{d}bbox_embed.layers.{i}", o, n)
    for i, (o, n) in enumerate(((256, 512), (256, 256))):
        s += _lin(f"{d}ref_point_head.layers.{i}", o, n)
    p = "detector.dot_prod_scoring."
    s += _lin(p + "prompt_mlp.layers.0", 2048, 256) + _lin(p + "prompt_mlp.layers.1", 256, 2048) + \
        _ln(p + "prompt_mlp.out_norm") + _lin(p + "prompt_proj", 256, 256) + _lin(p + "hs_proj", 256, 256)
    g = "detector.segmentation_head."
    for i in range(3):
        s += [(f"{g}pixel_decoder.conv_layers.{i}.weight", (256, 256, 3, 3), None),
              (f"{g}pixel_decoder.conv_layers.{i}.bias", (256,), None)] + _ln(f"{g}pixel_decoder.norms.{i}")
        s += _lin(f"{g}mask_predictor.mask_embed.layers.{i}", 256, 256)
    s += _lin(g + "semantic_seg_head", 1, 256) + _mha(g + "cross_attend_prompt") + _ln(g + "cross_attn_norm")
    ge = "detector.geometry_encoder."
    for i in range(3):
        e = f"{ge}encode.{i}."
        s += _mha(e + "self_attn") + _mha(e + "cross_attn_image") + _lin(e + "linear1", 2048, 256) + \
            _lin(e + "linear2", 256, 2048) + _ln(e + "norm1") + _ln(e + "norm2") + _ln(e + "norm3")
    s += [(ge + "label_embed.weight", (2, 256), None), (ge + "cls_embed.weight", (1, 256), None)] + \
        _lin(ge + "points_direct_project", 256, 2) + _lin(ge + "points_pool_project", 256, 256) + \
        _lin(ge + "points_pos_enc_project", 256, 256) + _lin(ge + "boxes_direct_project", 256, 4) + \
        _lin(ge + "boxes_pool_project", 256, 256 * 49) + _lin(ge + "boxes_pos_enc_project", 256, 258) + \
        _ln(ge + "img_pre_norm") + _ln(ge + "encode_norm") + _ln(ge + "norm")
    n_det = sum(1 for k, _, _ in s if k.startswith("detector.")) + 420
    s += [(f"detector.backbone.aux.{i}.weight", (256,), None) for i in range(max(0, 1156 - n_det))]
    # tracker (SAM2-style memory attention / encoder / prompt encoder / mask decoder)
    t = []
    for i in range(4):
        m = f"tracker.transformer.encoder.layers.{i}."
        t += _mha(m + "self_attn") + _lin(m + "cross_attn_image.q_proj", 256, 256) + \
            _lin(m + "cross_attn_image.k_proj", 256, 64) + _lin(m + "cross_attn_image.v_proj", 256, 64) + \
            _lin(m + "cross_attn_image.out_proj", 256, 256) + _lin(m + "linear1", 2048, 256) + \
            _lin(m + "linear2", 256, 2048) + _ln(m + "norm1") + _ln(m + "norm2") + _ln(m + "norm3")
    for i in range(2):
        m = f"tracker.sam_mask_decoder.transformer.layers.{i}."
        for a, inner in (("self_attn", 256), ("cross_attn_token_to_image", 128), ("cross_attn_image_to_token", 128)):
            t += _lin(f"{m}{a}.q_proj", inner, 256) + _lin(f"{m}{a}.k_proj", inner, 256) + \
                _lin(f"{m}{a}.v_proj", inner, 256) + _lin(f"{m}{a}.out_proj", 256, inner)
        t += _lin(m + "mlp.layers.0", 2048, 256) + _lin(m + "mlp.layers.1", 256, 2048)
        t += _ln(m + "norm1") + _ln(m + "norm2") + _ln(m + "norm3") + _ln(m + "norm4")
    t += [("tracker.sam_mask_decoder.iou_token.weight", (1, 256), None),
          ("tracker.sam_mask_decoder.mask_tokens.weight", (4, 256), None),
          ("tracker.sam_mask_decoder.output_upscaling.0.weight", (256, 64, 2, 2), None),
          ("tracker.maskmem_tpos_enc", (7, 1, 1, 64), None), ("tracker.no_mem_embed", (1, 1, 256), None),
          ("tracker.no_mem_pos_enc", (1, 1, 256), None), ("tracker.no_obj_ptr", (1, 256), None)]
    for i in range(4):
        t += [(f"tracker.sam_prompt_encoder.point_embeddings.{i}.weight", (1, 256), None)]
    for i in range(2):
        t += [(f"tracker.memory_encoder.fuser.layers.{i}.dwconv.weight", (256, 1, 7, 7), None)] + \
            _lin(f"tracker.memory_encoder.fuser.layers.{i}.pwconv1", 1024, 256) + \
            _lin(f"tracker.memory_encoder.fuser.layers.{i}.pwconv2", 256, 1024)
    t += _lin("tracker.obj_ptr_proj.layers.0", 256, 256) + _lin("tracker.obj_ptr_proj.layers.1", 256, 256)
    t += [(f"tracker.aux.{i}.weight", (256,), None) for i in range(max(0, 309 - len(t)))]
    return s + t


def resize(spec, scale):
    """Large tensors: dim 0 scaled by `scale` (>= 1 row); everything else unchanged."""
    out = []
    for k, shape, dt in spec:
        if numel(shape) >= BIG and scale != 1.0:
            shape = (max(1, round(shape[0] * scale)),) + tuple(shape[1:])
        out.append((k, shape, dt))
    return out


def plan(size_bytes):
    trunk, filler = trunk_spec(), filler_spec()
    tb = sum(nbytes(s, d) for _, s, d in trunk)
    fb_small = sum(nbytes(s, d) for _, s, d in filler if numel(s) < BIG)
    fb_big = sum(nbytes(s, d) for _, s, d in filler if numel(s) >= BIG)
    note = "trunk at real shapes"
    rest = size_bytes - tb - fb_small
    if rest < 0.1 * fb_big:  # too small for the real trunk: shrink trunk and filler alike
        ttb_small = sum(nbytes(s, d) for _, s, d in trunk if numel(s) < BIG)
        tb_big = tb - ttb_small
        scale = max(1e-4, (size_bytes - ttb_small - fb_small) / (tb_big + fb_big))
        trunk, note = resize(trunk, scale), f"trunk's large matrices scaled x{scale:.3f} along dim 0 (shapes not real)"
        filler = resize(filler, scale)
    else:
        filler = resize(filler, rest / fb_big)
    return trunk + filler, note


def make_sam3(path, size_bytes, seed):
    import torch
    spec, note = plan(size_bytes)
    g = torch.Generator().manual_seed(seed)
    sd = OrderedDict()
    for k, shape, dt in spec:  # each tensor is created once, in place; torch.save then streams them
        if dt == C64:
            sd[k] = torch.polar(torch.ones(shape), torch.empty(shape).uniform_(0, 6.283, generator=g))
        else:
            sd[k] = torch.empty(shape).uniform_(-0.02, 0.02, generator=g)
    n_det = sum(k.startswith("detector.") for k in sd)
    torch.save({"model": sd, "meta": {"note": "synthetic, bench_merge.py"}}, path)
    del sd
    return {"tensors": len(spec), "detector": n_det, "tracker": len(spec) - n_det,
            "trunk_tensors": sum(k.startswith(TRUNK) for k, _, _ in spec), "note": note}


def make_student(path, seed):
    import torch
    from ref_vit import StudentTrunk  # the project's Python reference of src/model/vit.h
    torch.manual_seed(seed)
    m = StudentTrunk(out_channels=1024, out_grid=72, width=768, img_size=1008, patch=16, depth=12, heads=12)
    sd = m.state_dict()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for k, t in sd.items():
            if t.dtype.is_floating_point:
                if k.endswith("running_var"):
                    t.uniform_(0.5, 1.5, generator=g)
                else:
                    t.uniform_(-0.02, 0.02, generator=g)
    assert tuple(sd["model.backbone.model.pos_embed"].shape) == (1, 3970, 768)
    torch.save({"trunk": dict(sd), "backbone": "vit_base", "model_name": "base"}, path)
    return len(sd)


def run_merge(binary, sam3, student, output):
    cmd = [str(binary), "sam3", "--sam3", str(sam3), "--trunk", str(student), "--output", str(output)]
    log = output.with_suffix(".log")
    with open(log, "w") as f:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT)
        peak = {"RssAnon": 0, "RssFile": 0}  # sampled every 20 ms: heap vs mapped file pages
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            try:
                for line in open(f"/proc/{p.pid}/status"):
                    k, _, v = line.partition(":")
                    if k in peak:
                        peak[k] = max(peak[k], int(v.split()[0]) * 1024)
            except (OSError, ValueError):
                pass
            time.sleep(0.02)
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
    text = log.read_text()
    if p.returncode != 0:
        sys.exit(f"bench_merge: {' '.join(cmd)} failed with exit code {p.returncode}:\n{text}")
    return wall, ru.ru_maxrss * 1024, peak, text  # ru_maxrss is in KiB on Linux


def gib(n):
    return f"{n / 2**30:.2f} GiB"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="/tmp/instinct_bench_merge")
    ap.add_argument("--size-gb", type=float, default=3.4, help="target size of sam3.pt in GB (1e9 bytes)")
    ap.add_argument("--bin", default=str(ROOT / "build" / "instinct-merge"))
    ap.add_argument("--repeat", type=int, default=1, help="merges to time")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--regen", action="store_true", help="regenerate the inputs even if --work has them")
    ap.add_argument("--keep-output", action="store_true", help="keep merged.pt and its manifest")
    ap.add_argument("--generate", action="store_true", help=argparse.SUPPRESS)  # internal: write the inputs, exit
    a = ap.parse_args()
    if a.generate:
        work = pathlib.Path(a.work)
        print(f"generating {work / 'sam3.pt'} (~{a.size_gb} GB) ...", flush=True)
        info = {"params": {"size_gb": a.size_gb, "seed": a.seed, "version": 1},
                "sam3": make_sam3(work / "sam3.pt", int(a.size_gb * 1e9), a.seed)}
        print(f"generating {work / 'student.pt'} (ViT-B/16 at 1008 px + 1024-channel adapter) ...", flush=True)
        info["student_tensors"] = make_student(work / "student.pt", a.seed + 1)
        (work / "inputs.json").write_text(json.dumps(info, indent=1))
        return
    binary = pathlib.Path(a.bin).resolve()
    if not binary.is_file():
        sys.exit(f"bench_merge: {binary} not found (build instinct-merge first, or pass --bin)")
    work = pathlib.Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    sam3, student, output = work / "sam3.pt", work / "student.pt", work / "merged.pt"
    params = {"size_gb": a.size_gb, "seed": a.seed, "version": 1}
    info_path = work / "inputs.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    if a.regen or info.get("params") != params or not sam3.is_file() or not student.is_file():
        info_path.unlink(missing_ok=True)
        t0 = time.perf_counter()
        # In a child process: a forked child's ru_maxrss starts at its parent's RSS, so the parent that
        # times the merge must never have held the generated tensors (nor imported torch).
        cmd = [sys.executable, __file__, "--generate", "--work", str(work), "--size-gb", str(a.size_gb),
               "--seed", str(a.seed)]
        subprocess.run(cmd, check=True)
        info = json.loads(info_path.read_text())
        print(f"inputs written in {time.perf_counter() - t0:.1f} s", flush=True)
    else:
        print(f"reusing the inputs in {work} (--regen to rebuild)")
    s = info["sam3"]
    print(f"sam3.pt: {s['tensors']} tensors ({s['detector']} detector incl. {s['trunk_tensors']} trunk, "
          f"{s['tracker']} tracker); {s['note']}")

    runs = []
    for i in range(a.repeat):
        output.unlink(missing_ok=True)
        wall, rss, peak, text = run_merge(binary, sam3, student, output)
        runs.append((wall, rss, peak))
        if i == 0:
            print(text.rstrip())
    in_sizes = {"sam3.pt": sam3.stat().st_size, "student.pt": student.stat().st_size}
    out_size = output.stat().st_size
    largest = max(in_sizes.values())

    print()
    print("| file | size |")
    print("|---|---:|")
    for name, n in in_sizes.items():
        print(f"| {name} (input) | {gib(n)} |")
    print(f"| merged.pt (output) | {gib(out_size)} |")
    print()
    print(f"`instinct-merge sam3` ({binary.name}, {os.cpu_count()} CPUs, warm page cache)")
    print()
    print("| run | wall time | peak RSS | peak RSS / largest input | of which anon / file-backed (sampled) | output written |")
    print("|---:|---:|---:|---:|---:|---:|")
    for i, (wall, rss, peak) in enumerate(runs):
        print(f"| {i + 1} | {wall:.2f} s | {rss / 2**20:.0f} MiB | {rss / largest:.3f} | "
              f"{peak['RssAnon'] / 2**20:.0f} / {peak['RssFile'] / 2**20:.0f} MiB | {out_size / 2**20 / wall:.0f} MiB/s |")
    print()
    print("peak RSS is ru_maxrss (every resident page: heap and mapped file pages); the anon / file-backed peaks "
          "come from /proc/PID/status sampled every 20 ms")
    if not a.keep_output:
        output.unlink(missing_ok=True)
        pathlib.Path(str(output) + ".manifest.json").unlink(missing_ok=True)


if __name__ == "__main__":
    main()
