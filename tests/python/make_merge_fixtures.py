#!/usr/bin/env python3
"""Small, deterministic inputs for `instinct-merge` (tests/cli/merge_smoke.sh).

Writes into --out DIR:
  sam3.pt              {"model": OrderedDict(SAM3-named tensors), "meta": {...}}: SAM3's real key names
                       and real shapes for a handful of modules (trunk incl. complex64 freqs_cis, necks,
                       text, transformer, scoring, segmentation, geometry, tracker), with bf16 / fp16 /
                       int64 / 0-dim tensors and a transposed view sharing storage with another tensor
  sam3_flat.pt         the same state dict saved flat (a plain dict, no wrapper)
  student.pt           InstinctSAM trunk file {'trunk', 'backbone', 'model_name'}: a small ViT
                       (width 64, depth 2, heads 2, patch 16, 64 px) + adapter with 1024 output channels
  student_wrong.pt     the same student with 512 adapter output channels
  student_missing.pt   student.pt minus one block key
  student_extra.pt     student.pt plus an unexpected key (timm's classifier `head.weight`)
  text.pt              a text-encoder state dict (encoder.*, projector (256,512))
  text_wrong.pt        the same with a (384,512) projector
  dup.pt               {"model": OrderedDict} whose pickle sets one key twice (OrderedDict reduce)
  dup_plain.pt         {"model": dict} whose pickle sets one key twice (plain dict, SETITEMS)
  truncated.pt         sam3.pt cut to half its size
  badpickle.pt         sam3.pt with its data.pkl cut short (a valid zip, a corrupt pickle)
  norecord.pt          sam3.pt without the storage record of its last tensor (a kept tracker tensor)
  garbage.pt           random bytes
Also importable: make_student(out_channels, seed, ...) and sam3_state_dict(seed)."""
import argparse, collections, io, pathlib, sys, zipfile

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from ref_vit import StudentTrunk, randomize_  # noqa: E402

TRUNK = "detector.backbone.vision_backbone.trunk."
VB = "detector.backbone.vision_backbone."
LB = "detector.backbone.language_backbone."
DUP_PROBE = ("tracker.dup_probe.a", "tracker.dup_probe.b")  # same length: b is patched into a


def sam3_state_dict(seed=0):
    """An OrderedDict with SAM3's key names and real shapes for a few modules of each part."""
    g = torch.Generator().manual_seed(seed)
    sd = collections.OrderedDict()

    def rnd(*shape, dtype=torch.float32, scale=0.02):
        return (scale * torch.randn(shape, generator=g)).to(dtype)

    def freqs(n):  # RoPE-like unit complex numbers, complex64
        ang = torch.rand((n, 32), generator=g) * 6.283
        return torch.polar(torch.ones(n, 32), ang).to(torch.complex64)

    # vision trunk (every key here is removed by the merge)
    sd[TRUNK + "patch_embed.proj.weight"] = rnd(1024, 3, 14, 14)
    sd[TRUNK + "pos_embed"] = rnd(1, 577, 1024)
    sd[TRUNK + "ln_pre.weight"] = 1 + rnd(1024)
    sd[TRUNK + "ln_pre.bias"] = rnd(1024)
    for i, n in ((0, 576), (7, 5184)):
        b = f"{TRUNK}blocks.{i}."
        sd[b + "norm1.weight"] = 1 + rnd(1024)
        sd[b + "norm1.bias"] = rnd(1024)
        sd[b + "attn.qkv.bias"] = rnd(3072)
        sd[b + "attn.proj.bias"] = rnd(1024)
        sd[b + "attn.freqs_cis"] = freqs(n)
        sd[b + "norm2.weight"] = 1 + rnd(1024)
        sd[b + "norm2.bias"] = rnd(1024)
        sd[b + "mlp.fc1.bias"] = rnd(4736)
        sd[b + "mlp.fc2.bias"] = rnd(1024)
    # necks: detector (convs) and interactive (sam2_convs), 1024 -> 256
    for neck in ("convs", "sam2_convs"):
        for i in range(3):
            b = f"{VB}{neck}.{i}."
            sd[b + "conv_1x1.weight"] = rnd(256, 1024, 1, 1)
            sd[b + "conv_1x1.bias"] = rnd(256)
            sd[b + "conv_3x3.bias"] = rnd(256)
    # text encoder (replaced with --text)
    sd[LB + "encoder.positional_embedding"] = rnd(32, 1024)
    sd[LB + "encoder.ln_final.weight"] = 1 + rnd(1024)
    sd[LB + "encoder.ln_final.bias"] = rnd(1024)
    sd[LB + "encoder.transformer.resblocks.0.ln_1.weight"] = 1 + rnd(1024)
    sd[LB + "resizer.weight"] = rnd(256, 1024)
    sd[LB + "resizer.bias"] = rnd(256)
    # fusion encoder / decoder
    sd["detector.transformer.encoder.layers.0.self_attn.in_proj_weight"] = rnd(768, 256)
    sd["detector.transformer.encoder.layers.0.self_attn.in_proj_bias"] = rnd(768)
    sd["detector.transformer.encoder.layers.0.self_attn.out_proj.weight"] = rnd(256, 256)
    sd["detector.transformer.encoder.layers.0.linear1.bias"] = rnd(2048, dtype=torch.float16)
    sd["detector.transformer.decoder.query_embed.weight"] = rnd(200, 256, dtype=torch.bfloat16)
    ref = rnd(256, 512)
    sd["detector.transformer.decoder.ref_point_head.layers.0.weight"] = ref
    # a non-contiguous view sharing storage with the tensor above (stride (1, 512))
    sd["detector.transformer.decoder.ref_point_head.layers.0.weight_t"] = ref.t()
    # scoring, segmentation, geometry
    sd["detector.dot_prod_scoring.prompt_mlp.layers.0.weight"] = rnd(256, 256)
    sd["detector.dot_prod_scoring.prompt_mlp.layers.0.bias"] = rnd(256)
    sd["detector.dot_prod_scoring.hs_proj.weight"] = rnd(256, 256)
    sd["detector.dot_prod_scoring.scale"] = torch.tensor(16.0)  # 0-dim
    sd["detector.segmentation_head.pixel_decoder.conv_layers.0.weight"] = rnd(256, 256, 3, 3)
    sd["detector.segmentation_head.pixel_decoder.conv_layers.0.bias"] = rnd(256)
    sd["detector.segmentation_head.mask_predictor.mask_embed.layers.0.weight"] = rnd(256, 256)
    sd["detector.geometry_encoder.label_embed.weight"] = rnd(2, 256)
    sd["detector.geometry_encoder.points_direct_project.weight"] = rnd(256, 2)
    sd["detector.geometry_encoder.label_ids"] = torch.arange(4, dtype=torch.int64) * 3 - 2
    # tracker
    sd["tracker.maskmem_tpos_enc"] = rnd(7, 1, 1, 64)
    sd["tracker.no_mem_embed"] = rnd(1, 1, 256)
    sd["tracker.no_obj_ptr"] = rnd(1, 256)
    sd["tracker.sam_mask_decoder.iou_token.weight"] = rnd(1, 256)
    sd["tracker.sam_mask_decoder.mask_tokens.weight"] = rnd(4, 256)
    sd["tracker.sam_prompt_encoder.point_embeddings.0.weight"] = rnd(1, 256)
    return sd


def make_student(out_channels=1024, seed=1, width=64, depth=2, heads=2, patch=16, img_size=64):
    """An InstinctSAM trunk file dict for a small student with ref_vit's (= src/model/vit.h) keys."""
    m = StudentTrunk(out_channels=out_channels, out_grid=img_size // patch, width=width, img_size=img_size,
                     patch=patch, depth=depth, heads=heads)
    randomize_(m, seed)
    return {"trunk": dict(m.state_dict()), "backbone": "vit_base", "model_name": "base"}


def text_state_dict(rows=256, seed=2):
    g = torch.Generator().manual_seed(seed)
    return {
        "encoder.embed.weight": 0.02 * torch.randn((100, 512), generator=g),
        "encoder.layers.0.weight": 0.02 * torch.randn((512, 512), generator=g),
        "encoder.layers.0.bias": 0.02 * torch.randn((512,), generator=g),
        "projector.weight": 0.02 * torch.randn((rows, 512), generator=g),
        "projector.bias": 0.02 * torch.randn((rows,), generator=g),
    }


class _DupOrderedDict:
    """Pickles as an OrderedDict whose items list sets `key` twice (last value wins in Python)."""

    def __init__(self, items):
        self.items = items

    def __reduce__(self):
        return (collections.OrderedDict, (), None, None, iter(self.items))


def _rewrite_zip(src, dst, patch):
    """Copies a torch.save zip, applying patch(name, bytes) -> bytes (None: drop) to every record."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = patch(info.filename, zin.read(info.filename))
            if data is None:  # drop the record
                continue
            zi = zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0))
            zout.writestr(zi, data)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    out = pathlib.Path(ap.parse_args().out)
    out.mkdir(parents=True, exist_ok=True)

    sd = sam3_state_dict(0)
    torch.save({"model": sd, "meta": {"note": "synthetic", "version": 3}}, out / "sam3.pt")
    torch.save(dict(sd), out / "sam3_flat.pt")

    student = make_student(1024, seed=1)
    torch.save(student, out / "student.pt")
    torch.save(make_student(512, seed=1), out / "student_wrong.pt")
    missing = dict(student["trunk"])
    del missing["model.backbone.model.blocks.1.mlp.fc2.bias"]
    torch.save({**student, "trunk": missing}, out / "student_missing.pt")
    extra = dict(student["trunk"])
    extra["model.backbone.model.head.weight"] = torch.zeros(10, 64)
    torch.save({**student, "trunk": extra}, out / "student_extra.pt")

    torch.save(text_state_dict(256), out / "text.pt")
    torch.save(text_state_dict(384), out / "text_wrong.pt")

    # duplicate keys: (1) an OrderedDict whose pickled items repeat a key
    small = [(k, v) for k, v in sd.items() if not k.startswith(TRUNK) and v.numel() <= 4096][:6]
    trunk_small = [(k, v) for k, v in sd.items() if k.startswith(TRUNK) and v.numel() <= 1024][:2]
    dup_key = small[0][0]
    items = trunk_small + small + [(dup_key, torch.ones(3))]
    torch.save({"model": _DupOrderedDict(items), "meta": {"note": "duplicate key"}}, out / "dup.pt")
    # (2) a plain dict: save two distinct same-length keys, then rename the second into the first
    plain = dict(trunk_small + small)
    plain[DUP_PROBE[0]] = torch.zeros(2)
    plain[DUP_PROBE[1]] = torch.ones(2)
    buf = io.BytesIO()
    torch.save({"model": plain}, buf)
    buf.seek(0)

    def patch(name, data):
        if name.endswith("/data.pkl"):
            a, b = (k.encode() for k in DUP_PROBE)
            assert data.count(b) == 1, "probe key not found exactly once"
            data = data.replace(b, a)
        return data

    _rewrite_zip(buf, out / "dup_plain.pt", patch)

    # corrupt archives that are still valid zips
    with zipfile.ZipFile(out / "sam3.pt") as z:
        last = max((n for n in z.namelist() if "/data/" in n), key=lambda n: int(n.rsplit("/", 1)[1]))
    _rewrite_zip(out / "sam3.pt", out / "badpickle.pt",
                 lambda name, data: data[: len(data) // 2] if name.endswith("/data.pkl") else data)
    _rewrite_zip(out / "sam3.pt", out / "norecord.pt", lambda name, data: None if name == last else data)

    raw = (out / "sam3.pt").read_bytes()
    (out / "truncated.pt").write_bytes(raw[: len(raw) // 2])
    g = torch.Generator().manual_seed(5)
    (out / "garbage.pt").write_bytes(bytes(torch.randint(0, 256, (65536,), generator=g, dtype=torch.uint8).tolist()))

    for p in sorted(out.glob("*.pt")):
        print(f"{p.name:20s} {p.stat().st_size / 1e6:8.2f} MB")


if __name__ == "__main__":
    main()
