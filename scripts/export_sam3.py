#!/usr/bin/env python3
"""Export SAM3's image model into an InstinctSAM teacher bundle (format version 2).

Builds SAM3 from its own code, loads sam3.pt strictly (or seeds random weights), rewrites the trunk's
complex RoPE into the real form, wraps the bundle boundaries, traces each one, reloads the file and
checks it against SAM3's eager code at two batch sizes, refuses saved code that pins a device, and
writes bundle.json (with provenance) and export_report.json. See docs/sam3.md and
docs/teacher-bundle.md.

  /usr/bin/python3 scripts/export_sam3.py --sam3-src ~/sam3 --checkpoint sam3.pt --out sam3_bundle
  /usr/bin/python3 scripts/export_sam3.py --sam3-src ../shared/sam3/src --random-init 0 --size small --out /tmp/b
"""
import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time
import zipfile

import warnings

import torch
import torch.nn as nn

# SAM3's shape checks become constants when traced (fine at a fixed image size): not worth a warning.
warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sam3_support as S  # noqa: E402
from make_reference_teacher import as_tuple, sha256_file as sha256  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUNDLE_VERSION = 2
PROMPT_LENGTH = 32
D = 256


def log(msg):
    print(f"[export_sam3 {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ------------------------------------------------------------------------- boundary wrappers
class Trunk(nn.Module):
    """pixels (B,3,S,S) -> feats (B,C,G,G), the raw residual stream of the last block."""

    def __init__(self, trunk):
        super().__init__()
        self.trunk = trunk

    def forward(self, pixels):
        return self.trunk(pixels)[-1]


class DetectorNeck(nn.Module):
    """feats -> fpn0, fpn1, fpn2 (`convs[0..2]`; scalp=1 drops the 0.5 level)."""

    def __init__(self, neck):
        super().__init__()
        self.convs = nn.ModuleList(list(neck.convs)[:3])

    def forward(self, feats):
        return self.convs[0](feats), self.convs[1](feats), self.convs[2](feats)


class InteractiveNeck(nn.Module):
    """feats -> emb (level 2 + no_mem_embed), s0 = conv_s0(level 0), s1 = conv_s1(level 1), as
    Sam3Processor.set_image and Sam3Image.predict_inst prepare them."""

    def __init__(self, neck, tracker):
        super().__init__()
        self.sam2_convs = nn.ModuleList(list(neck.sam2_convs)[:3])
        self.conv_s0 = tracker.sam_mask_decoder.conv_s0
        self.conv_s1 = tracker.sam_mask_decoder.conv_s1
        self.no_mem_embed = nn.Parameter(tracker.no_mem_embed.detach().clone().reshape(1, -1, 1, 1),
                                         requires_grad=False)

    def forward(self, feats):
        emb = self.sam2_convs[2](feats) + self.no_mem_embed
        return emb, self.conv_s0(self.sam2_convs[0](feats)), self.conv_s1(self.sam2_convs[1](feats))


class Grounding(nn.Module):
    """fpn0..2, text (B,L,D) batch-first, text_pad (B,L) -> logits, boxes, masks, presence, memory,
    queries: Sam3Image.forward_grounding with a text-only prompt (the geometry encoder reduces to
    its CLS token), composed from SAM3's own modules."""

    def __init__(self, model):
        super().__init__()
        self.geometry_encoder = model.geometry_encoder
        self.transformer = model.transformer
        self.segmentation_head = model.segmentation_head
        self.dot_prod_scoring = model.dot_prod_scoring
        self.position_encoding = model.backbone.vision_backbone.position_encoding
        self._sam3 = [model]  # for its decoder / scoring code; not a registered submodule

    def forward(self, fpn0, fpn1, fpn2, text, text_pad):
        model = self._sam3[0]
        g = fpn2.shape[-1]
        pos = self.position_encoding(fpn2).to(fpn2.dtype)
        img = fpn2.flatten(2).permute(2, 0, 1)
        img_pos = pos.flatten(2).permute(2, 0, 1)
        ge = self.geometry_encoder
        cls = ge.cls_embed.weight.view(1, 1, -1).repeat(1, fpn2.shape[0], 1)
        geo_mask = torch.zeros_like(text_pad[:, :1])
        geo = ge.norm(ge.final_proj(cls))
        for layer in ge.encode:
            geo = layer(tgt=geo, memory=img, tgt_key_padding_mask=geo_mask, pos=img_pos)
        geo = ge.encode_norm(geo)
        prompt = torch.cat([text.transpose(0, 1), geo], dim=0)
        prompt_mask = torch.cat([text_pad, geo_mask], dim=1)
        enc = self.transformer.encoder(src=[img], src_key_padding_mask=None, src_pos=[img_pos],
                                       prompt=prompt, prompt_pos=torch.zeros_like(prompt),
                                       prompt_key_padding_mask=prompt_mask, feat_sizes=[(g, g)])
        encoder_out = {"level_start_index": enc["level_start_index"],
                       "spatial_shapes": enc["spatial_shapes"], "valid_ratios": enc["valid_ratios"]}
        out, hs = model._run_decoder(memory=enc["memory"], pos_embed=enc["pos_embed"],
                                     src_mask=enc["padding_mask"], out={}, prompt=prompt,
                                     prompt_mask=prompt_mask, encoder_out=encoder_out)
        seg = self.segmentation_head
        memory = enc["memory"]
        states = memory
        if seg.cross_attend_prompt is not None:
            attended = seg.cross_attend_prompt(query=seg.cross_attn_norm(memory), key=prompt,
                                               value=prompt, key_padding_mask=prompt_mask)[0]
            states = attended + memory
        visual = states.permute(1, 2, 0)[..., : g * g].reshape(-1, *fpn2.shape[1:])
        pixel_embed = seg.pixel_decoder([fpn0, fpn1, visual])
        masks = seg.mask_predictor(hs[-1], seg.instance_seg_head(pixel_embed))
        return (out["pred_logits"], out["pred_boxes"], masks, out["presence_logit_dec"], memory,
                out["queries"])


class SamHead(nn.Module):
    """emb, s0, s1, points (B,N,2) in input pixels, labels (B,N) -> masks (B,4,M,M) logits,
    iou (B,4), obj (B,1): SAM3's prompt encoder called as its predictor calls it (boxes given as
    corner points 2/3, boxes=None, so exactly one not-a-point is appended) and its mask decoder with
    all four mask tokens (index 0 = the single-mask output, 1..3 = the multimask outputs)."""

    def __init__(self, tracker):
        super().__init__()
        self.prompt_encoder = tracker.sam_prompt_encoder
        self.mask_decoder = tracker.sam_mask_decoder
        # get_dense_pe depends only on the grid size; as a buffer it follows the module's device.
        with torch.no_grad():
            self.register_buffer("dense_pe", tracker.sam_prompt_encoder.get_dense_pe().detach().clone())

    def forward(self, emb, s0, s1, points, labels):
        sparse, dense = self.prompt_encoder(points=(points, labels), boxes=None, masks=None)
        masks, iou, _, obj = self.mask_decoder.predict_masks(
            image_embeddings=emb, image_pe=self.dense_pe,
            sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, repeat_image=False,
            high_res_features=[s0, s1])
        return masks, iou, obj


class TextEncoder(nn.Module):
    """token ids (B,L) int64 (SOT ... EOT, zero padded) -> text (B,L,D) batch-first, text_pad (B,L)
    (true = padding): VETextEncoder.forward after its tokenizer."""

    def __init__(self, text_encoder):
        super().__init__()
        self.encoder = text_encoder.encoder
        self.resizer = text_encoder.resizer

    def forward(self, ids):
        _, memory = self.encoder(ids)
        return self.resizer(memory), ids == 0


class ConceptBank(nn.Module):
    """ids (B,) -> text (B,L,D), text_pad (B,L): the text encoder's output per vocabulary phrase."""

    def __init__(self, text, pad):
        super().__init__()
        self.register_buffer("text", text)
        self.register_buffer("pad", pad)

    def forward(self, ids):
        return self.text[ids], self.pad[ids]


# ------------------------------------------------------------------------- SAM3's eager code
def eager_grounding(model, fpn, text, text_pad):
    """SAM3's own forward_grounding on the same inputs (the reference for the Grounding wrapper)."""
    from sam3.model.data_misc import FindStage
    b = fpn[0].shape[0]
    pos = [model.backbone.vision_backbone.position_encoding(f).to(f.dtype) for f in fpn]
    backbone_out = {"backbone_fpn": list(fpn), "vision_pos_enc": pos,
                    "language_features": text.transpose(0, 1), "language_mask": text_pad}
    ar = torch.arange(b, device=fpn[0].device)
    find = FindStage(img_ids=ar, text_ids=ar, input_boxes=None, input_boxes_mask=None,
                     input_boxes_label=None, input_points=None, input_points_mask=None)
    out = model.forward_grounding(backbone_out=backbone_out, find_input=find, find_target=None,
                                  geometric_prompt=model._get_dummy_prompt(num_prompts=b))
    return (out["pred_logits"], out["pred_boxes"], out["pred_masks"], out["presence_logit_dec"],
            out["encoder_hidden_states"], out["queries"])


def eager_sam_head(tracker, emb, s0, s1, points, labels):
    """SAM3's predictor path (`SAM3InteractiveImagePredictor._predict`) without post-processing,
    all four mask tokens."""
    sparse, dense = tracker.sam_prompt_encoder(points=(points, labels.int()), boxes=None, masks=None)
    masks, iou, _, obj = tracker.sam_mask_decoder.predict_masks(
        image_embeddings=emb, image_pe=tracker.sam_prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, repeat_image=False,
        high_res_features=[s0, s1])
    return masks, iou, obj


def eager_text(model, phrases, device):
    """SAM3's forward_text: (text (B,L,D) batch-first, pad (B,L))."""
    out = model.backbone.forward_text(list(phrases), device=device)
    return out["language_features"].transpose(0, 1), out["language_mask"]


def eager_interactive(model, feats):
    neck = model.backbone.vision_backbone
    tracker = model.inst_interactive_predictor.model
    lv = [neck.sam2_convs[i](feats) for i in range(3)]
    emb = lv[2] + tracker.no_mem_embed.reshape(1, -1, 1, 1)
    return emb, tracker.sam_mask_decoder.conv_s0(lv[0]), tracker.sam_mask_decoder.conv_s1(lv[1])


# ------------------------------------------------------------------------- trace / check helpers
def replace_device_constants(traced):
    """The tracer writes the trace device into tensor-creating ops (`torch.device("cpu")` in the
    saved code). In every traced method's graph, replace each constant device by the device of that
    method's first tensor input, so one bundle runs on CPU and CUDA. Returns how many were replaced
    (constants left in a method without tensor inputs are caught by `pinned_devices`)."""
    replaced = 0
    for mod in traced.modules():
        try:
            graph = mod.graph
        except (AttributeError, RuntimeError):
            continue
        inputs = [v for v in graph.inputs() if v.type().kind() == "TensorType"]
        if not inputs:
            continue
        for node in list(graph.nodes()):
            replaced += _replace_in_block(graph, node, inputs[0])
    return replaced


def _replace_in_block(graph, node, source):
    count = 0
    for block in node.blocks():
        for inner in list(block.nodes()):
            count += _replace_in_block(graph, inner, source)
    if node.kind() == "prim::Constant" and node.output().type().kind() == "DeviceObjType":
        dev = graph.create("prim::device", [source], 1)
        dev.output().setType(node.output().type())
        dev.insertBefore(node)
        node.output().replaceAllUsesWith(dev.output())
        node.destroy()
        count += 1
    return count


DEVICE_PATTERN = re.compile(r'torch\.device\(|"cuda(:\d+)?"|"cpu"')


def pinned_devices(path):
    """Lines of the saved TorchScript code that name a device."""
    hits = []
    with zipfile.ZipFile(path) as z:
        for name in z.namelist():
            if "/code/" in name and name.endswith(".py"):
                for line in z.read(name).decode("utf-8", "replace").splitlines():
                    if DEVICE_PATTERN.search(line):
                        hits.append(f"{name.split('/code/', 1)[1]}: {line.strip()[:160]}")
    return hits


def max_rel_error(got, want):
    """max |got - want| / max(|want|) per output (bool outputs: fraction of unequal elements)."""
    errs = []
    for g, w in zip(as_tuple(got), as_tuple(want)):
        if g.shape != w.shape:
            raise S.ExportError(f"output shape {list(g.shape)} != SAM3's {list(w.shape)}")
        if w.dtype == torch.bool:
            errs.append(float((g != w).float().mean()))
        else:
            scale = float(w.abs().max()) or 1.0
            errs.append(float((g.float() - w.float()).abs().max()) / scale)
    return errs


def read_vocab(path):
    phrases = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            p = line.strip()
            if not p or p.startswith("#"):
                continue
            if p in phrases:
                raise S.ExportError(f"--vocab {path}:{n}: phrase '{p}' is listed twice")
            phrases.append(p)
    if not phrases:
        raise S.ExportError(f"--vocab {path}: no phrases (one per line)")
    return phrases


# ------------------------------------------------------------------------- the export
def export(args):
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise S.ExportError("--device cuda: torch.cuda.is_available() is False on this machine")
    vocab_path = args.vocab or os.path.join(ROOT, "configs", "vocab", "coco80.txt")
    phrases = read_vocab(vocab_path)
    t_all = time.time()
    log(f"building SAM3 ({args.size}) from {args.sam3_src or 'the installed sam3'} on {device}")
    t0 = time.time()
    seed = args.random_init if args.random_init is not None else 0
    model, info = S.build_image_model(args.sam3_src, args.timm_src, args.size, device, seed)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"built in {time.time() - t0:.1f} s: {n_params / 1e6:.1f}M parameters; shims: "
        f"{', '.join(s.split(' ')[0] for s in info['shims']) or 'none'}")
    ckpt_sha = None
    if args.checkpoint:
        t0 = time.time()
        ckpt_sha = S.load_checkpoint_strict(model, args.checkpoint)
        log(f"loaded {args.checkpoint} strictly in {time.time() - t0:.1f} s (sha256 {ckpt_sha[:12]}...)")
    model = model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    trunk = model.backbone.vision_backbone.trunk
    tracker = model.inst_interactive_predictor.model
    S_px = info["image_size"]

    BS = sorted(set(args.batch_sizes))
    gen = torch.Generator().manual_seed(1234)
    def rand(*shape):
        return torch.randn(*shape, generator=gen).to(device)

    # SAM3's own trunk before the RoPE rewrite is the reference for the rewritten one.
    pixels = {b: rand(b, 3, S_px, S_px).clamp(-1, 1) for b in BS}
    with torch.no_grad():
        ref_feats = {b: trunk(pixels[b])[-1] for b in BS}
    n_rope = S.rewrite_rope(trunk)
    log(f"rewrote the complex RoPE of {n_rope} trunk attention blocks into cos/sin buffers")

    os.makedirs(os.path.dirname(os.path.abspath(args.out)) or ".", exist_ok=True)
    stage = tempfile.mkdtemp(prefix=".export_", dir=os.path.dirname(os.path.abspath(args.out)) or ".")
    report = {"modules": {}, "batch_sizes": BS, "trace_batch": max(BS), "device": str(device)}
    try:
        with torch.no_grad():
            fpn = {b: eager_neck(model, ref_feats[b]) for b in BS}
            inter = {b: eager_interactive(model, ref_feats[b]) for b in BS}
            sample = [phrases[i % len(phrases)] for i in range(max(BS))]
            text_b = {b: eager_text(model, sample[:b], device) for b in BS}
            tok = model.backbone.language_backbone.tokenizer
            ids_b = {b: tok(sample[:b], context_length=PROMPT_LENGTH).to(device) for b in BS}
            pts = {b: torch.stack([torch.rand(b, 3, generator=gen) * S_px,
                                   torch.rand(b, 3, generator=gen) * S_px], -1).to(device) for b in BS}
            lbl = {b: torch.tensor([[2, 3, 1]] * b, dtype=torch.long, device=device) for b in BS}

        modules = [
            ("trunk", Trunk(trunk), lambda b: (pixels[b],), lambda b: ref_feats[b]),
            ("detector_neck", DetectorNeck(model.backbone.vision_backbone), lambda b: (ref_feats[b],),
             lambda b: fpn[b]),
            ("interactive_neck", InteractiveNeck(model.backbone.vision_backbone, tracker),
             lambda b: (ref_feats[b],), lambda b: inter[b]),
            ("grounding", Grounding(model), lambda b: (*fpn[b], *text_b[b]),
             lambda b: eager_grounding(model, fpn[b], *text_b[b])),
            ("sam_head", SamHead(tracker), lambda b: (*inter[b], pts[b], lbl[b]),
             lambda b: eager_sam_head(tracker, *inter[b], pts[b], lbl[b])),
        ]
        if not args.no_text_encoder:
            modules.append(("text_encoder", TextEncoder(model.backbone.language_backbone),
                            lambda b: (ids_b[b],), lambda b: text_b[b]))
        # The concept bank: SAM3's text encoder run once per vocabulary phrase.
        t0 = time.time()
        with torch.no_grad():
            chunks = [eager_text(model, phrases[i:i + 16], device) for i in range(0, len(phrases), 16)]
        bank_text = torch.cat([c[0] for c in chunks]).contiguous()
        bank_pad = torch.cat([c[1] for c in chunks]).contiguous()
        log(f"encoded {len(phrases)} vocabulary phrases in {time.time() - t0:.1f} s")
        bank_ids = {b: torch.tensor([(len(phrases) - 1 - 7 * i) % len(phrases) for i in range(b)], device=device)
                    for b in BS}
        with torch.no_grad():
            bank_ref = {b: eager_text(model, [phrases[int(i)] for i in bank_ids[b]], device) for b in BS}
        modules.append(("concept_bank", ConceptBank(bank_text, bank_pad), lambda b: (bank_ids[b],),
                        lambda b: bank_ref[b]))

        entries = {}
        for key, wrapper, inputs, reference in modules:
            t0 = time.time()
            wrapper = wrapper.eval()
            with torch.no_grad():
                traced = torch.jit.trace(wrapper, inputs(max(BS)), check_trace=False)
            n_dev = replace_device_constants(traced)
            path = os.path.join(stage, f"{key}.pt")
            traced.save(path)
            t_trace = time.time() - t0
            pinned = pinned_devices(path)
            if pinned:
                raise S.ExportError(f"{key}: the saved TorchScript pins a device ({len(pinned)} places, "
                                    f"first: {pinned[0]}); a bundle must run on any device")
            loaded = torch.jit.load(path, map_location=device).eval()
            errs = {}
            with torch.no_grad():
                for b in BS:
                    errs[b] = max_rel_error(as_tuple(loaded(*inputs(b))), as_tuple(reference(b)))
            worst = max(max(v) for v in errs.values())
            size = os.path.getsize(path)
            report["modules"][key] = {"max_rel_error": worst, "per_output": {str(b): e for b, e in errs.items()},
                                      "trace_s": round(t_trace, 2), "check_s": round(time.time() - t0 - t_trace, 2),
                                      "bytes": size, "device_constants_replaced": n_dev}
            ok = worst <= args.tolerance
            log(f"{key:16s} traced {t_trace:6.1f} s, checked at B={','.join(map(str, BS))}: max rel error {worst:.2e} "
                f"({'ok' if ok else 'FAIL'}), {size / 2**20:.1f} MiB, {n_dev} device constants replaced")
            if not ok:
                raise S.ExportError(f"{key}: traced module differs from SAM3's eager code by {worst:.3e} "
                                    f"(tolerance {args.tolerance:g})")
            entries[key] = {"file": f"{key}.pt", "sha256": sha256(path)}

        bpe_name = os.path.basename(info["bpe_path"])
        shutil.copyfile(info["bpe_path"], os.path.join(stage, bpe_name))
        g = S_px // 14
        bundle = {
            "format": "instinct-teacher-bundle", "version": BUNDLE_VERSION,
            "name": "sam3" if args.size == "full" else "sam3-small",
            "image_size": S_px, "resize": "squash", "pixel_mean": [0.5] * 3, "pixel_std": [0.5] * 3,
            "trunk": {"channels": int(ref_feats[1].shape[1]), "grid": g, "patch": 14},
            "neck_channels": D, "num_queries": int(model.transformer.decoder.num_queries),
            "mask_size": 4 * g, "prompt_length": PROMPT_LENGTH,
            "sam_head": {"mask_tokens": 4, "padding_point": "appended",
                         "stability_delta": float(tracker.sam_mask_decoder.dynamic_multimask_stability_delta),
                         "stability_thresh": float(tracker.sam_mask_decoder.dynamic_multimask_stability_thresh),
                         "mask_threshold": float(model.inst_interactive_predictor.mask_threshold),
                         "fill_hole_area": int(model.inst_interactive_predictor._transforms.max_hole_area)},
            "concepts": phrases,
            "tokenizer": {"type": "clip_bpe", "file": bpe_name, "sha256": sha256(info["bpe_path"]),
                          "context_length": PROMPT_LENGTH},
            "modules": entries,
            "provenance": {
                "exporter": "scripts/export_sam3.py", "sam3_commit": info["sam3_commit"],
                "checkpoint": os.path.abspath(args.checkpoint) if args.checkpoint else None,
                "checkpoint_sha256": ckpt_sha,
                "random_init_seed": args.random_init if not args.checkpoint else None,
                "size": args.size, "torch": torch.__version__, "trace_device": str(device),
                "vocab": os.path.abspath(vocab_path), "shims": info["shims"],
                "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
        }
        with open(os.path.join(stage, "bundle.json"), "w") as f:
            json.dump(bundle, f, indent=1)
        report.update({"total_s": round(time.time() - t_all, 1), "parameters": n_params,
                       "tolerance": args.tolerance, "provenance": bundle["provenance"]})
        with open(os.path.join(stage, "export_report.json"), "w") as f:
            json.dump(report, f, indent=1)
        if os.path.exists(args.out):
            if not os.path.isdir(args.out) or os.listdir(args.out):
                if not args.force:
                    raise S.ExportError(f"--out {args.out} exists and is not empty (use --force to replace it)")
            shutil.rmtree(args.out) if os.path.isdir(args.out) else os.remove(args.out)
        os.rename(stage, args.out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    log(f"wrote {args.out} in {time.time() - t_all:.1f} s")


def eager_neck(model, feats):
    convs = model.backbone.vision_backbone.convs
    return tuple(convs[i](feats) for i in range(3))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sam3-src", default=os.environ.get("SAM3_SRC"),
                   help="directory holding SAM3's `sam3` package (default: $SAM3_SRC, else an importable sam3)")
    p.add_argument("--timm-src", default=os.environ.get("INSTINCT_TIMM_SRC"),
                   help="directory holding timm's `timm` package if timm is not installed (optional)")
    w = p.add_mutually_exclusive_group(required=True)
    w.add_argument("--checkpoint", help="sam3.pt (loaded strictly: every key, no extra, equal shapes)")
    w.add_argument("--random-init", type=int, metavar="SEED", help="random weights from SEED (tests, demos)")
    p.add_argument("--vocab", help="phrases for the concept bank, one per line (default configs/vocab/coco80.txt)")
    p.add_argument("--out", required=True, help="bundle directory to create (written atomically)")
    p.add_argument("--device", default="cpu", help="cpu or cuda: where to trace and check (default cpu)")
    p.add_argument("--size", choices=("full", "small"), default="full",
                   help="full = SAM3 at 1008 px; small = the reduced SAM3 (224 px) for tests and demos")
    p.add_argument("--no-text-encoder", action="store_true",
                   help="leave out text_encoder.pt (then only the concept bank's phrases can be prompted)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2], metavar="B",
                   help="batch sizes every module is checked at (traced at the largest; default 1 2)")
    p.add_argument("--tolerance", type=float, default=1e-4,
                   help="max relative error of a traced module vs SAM3's eager code (default 1e-4)")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    args = p.parse_args(argv)
    try:
        export(args)
    except S.ExportError as e:
        print(f"export_sam3: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
