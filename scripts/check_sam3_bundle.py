#!/usr/bin/env python3
"""Check a SAM3 teacher bundle against SAM3's own image inference, end to end.

Runs `instinct-eval` on the bundle and SAM3's Python inference (Sam3Processor for text prompts,
Sam3Image.predict_inst for boxes and points) on the same real photographs and the same prompts, and
compares every prompt: mask IoU, score and (text prompts) box. The weights come from the bundle's
provenance: the checkpoint it was exported from (pass it again with --checkpoint) or the random-init
seed. Exit status 0 when every prompt agrees, 1 when one does not, 2 on a usage error.

  /usr/bin/python3 scripts/check_sam3_bundle.py --bundle sam3_bundle --checkpoint sam3.pt \\
      --sam3-src ~/sam3 --images ~/sam3/assets/images
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import coco_rle  # noqa: E402
import sam3_support as S  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_IMAGES = ("truck.jpg", "groceries.jpg", "test_image.jpg")
# Prompt targets per image: (category, box as fractions x0, y0, x1, y1 of the image). Each becomes a
# rectangular COCO annotation, so instinct-eval prompts its box, its centroid click and its category.
# "red pickup truck" is in no concept bank of ours: instinct-eval tokenizes it in C++ and runs the
# bundle's text encoder (open vocabulary), SAM3 tokenizes it in Python.
TARGETS = [("truck", (0.10, 0.20, 0.85, 0.80)), ("person", (0.55, 0.05, 0.75, 0.45)),
           ("red pickup truck", (0.02, 0.60, 0.30, 0.95))]


def log(msg):
    print(f"[check_sam3 {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def write_annotations(path, images, targets=None):
    """COCO file with the prompt targets as rectangles on each image: `targets` maps an image file
    name to [[phrase, [x0, y0, x1, y1]], ...] in pixels; images it does not list (or all, without
    it) get TARGETS. Returns the file's content."""
    from PIL import Image
    targets = targets or {}
    cats = sorted({c for c, _ in TARGETS} | {t[0] for ts in targets.values() for t in ts})
    cat_id = {c: i + 1 for i, c in enumerate(cats)}
    coco = {"images": [], "annotations": [], "categories": [{"id": cat_id[c], "name": c} for c in cats]}
    ann_id = 1
    for i, p in enumerate(images, 1):
        w, h = Image.open(p).size
        coco["images"].append({"id": i, "file_name": os.path.basename(p), "width": w, "height": h})
        boxes = ([(c, (round(fx0 * w), round(fy0 * h), round(fx1 * w), round(fy1 * h)))
                  for c, (fx0, fy0, fx1, fy1) in TARGETS]
                 if os.path.basename(p) not in targets else
                 [(c, tuple(int(round(v)) for v in b)) for c, b in targets[os.path.basename(p)]])
        for c, (x0, y0, x1, y1) in boxes:
            if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
                raise S.ExportError(f"--targets: box {[x0, y0, x1, y1]} for '{c}' is not inside {os.path.basename(p)} ({w}x{h})")
            coco["annotations"].append({
                "id": ann_id, "image_id": i, "category_id": cat_id[c], "iscrowd": 0,
                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": float((x1 - x0) * (y1 - y0)),
                "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]]})
            ann_id += 1
    with open(path, "w") as f:
        json.dump(coco, f)
    return coco


def run_eval(binary, bundle, ann, image_dir, out, mask_choice, threads, prompts):
    cmd = [binary, f"annotations={ann}", f"images={image_dir}", f"teacher={bundle}", "students=[]",
           f"prompts=[{', '.join(prompts)}]", "protocol.n_images=0", "protocol.targets=all",
           "protocol.concept_threshold=0", f"protocol.mask_choice={mask_choice}", "protocol.point=centroid",
           f"output={out}", "device=cpu", "batch_size=1", "workers=1", f"threads={threads}",
           "progress=off", "overlays=0"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise S.ExportError(f"instinct-eval failed (exit {r.returncode}): {r.stderr.strip().splitlines()[-1:]}")
    with open(os.path.join(out, "report.json")) as f:
        return json.load(f)["rows"]


def single0_bundle(src, dst):
    """A view of bundle `src` (hard links, or copies: instinct refuses a symlink out of a bundle)
    whose bundle.json sets sam_head.stability_thresh = 0."""
    os.makedirs(dst, exist_ok=True)
    for name in os.listdir(src):
        if name != "bundle.json" and not os.path.exists(os.path.join(dst, name)):
            try:
                os.link(os.path.join(src, name), os.path.join(dst, name))
            except OSError:
                shutil.copy2(os.path.join(src, name), os.path.join(dst, name))
    with open(os.path.join(src, "bundle.json")) as f:
        info = json.load(f)
    info["sam_head"]["stability_thresh"] = 0.0
    with open(os.path.join(dst, "bundle.json"), "w") as f:
        json.dump(info, f)
    return dst


def mask_iou(a, b):
    u = np.logical_or(a, b).sum()
    return 1.0 if u == 0 else float(np.logical_and(a, b).sum()) / float(u)


def check(args):
    with open(os.path.join(args.bundle, "bundle.json")) as f:
        info = json.load(f)
    prov = info.get("provenance") or {}
    if prov.get("exporter") != "scripts/export_sam3.py":
        raise S.ExportError(f"{args.bundle}: bundle.json has no SAM3 export provenance (not written by export_sam3.py)")
    size = prov.get("size", "full")
    seed = prov.get("random_init_seed")
    if prov.get("checkpoint_sha256") and not args.checkpoint:
        raise S.ExportError(f"{args.bundle} was exported from {prov.get('checkpoint')}: pass it with --checkpoint")
    log(f"building SAM3 ({size}) with the bundle's weights")
    model, binfo = S.build_image_model(args.sam3_src, args.timm_src, size, "cpu", seed if seed is not None else 0)
    timm_then = any(x.startswith("timm ") for x in prov.get("shims", []))
    timm_now = any(x.startswith("timm ") for x in binfo["shims"])
    if seed is not None and timm_then != timm_now:
        raise S.ExportError(f"{args.bundle} was exported {'with' if timm_then else 'without'} the timm stand-in and this "
                            f"check runs {'with' if timm_now else 'without'} it: random weights would differ (use the "
                            "same timm: --timm-src / INSTINCT_TIMM_SRC)")
    if args.checkpoint:
        sha = S.load_checkpoint_strict(model, args.checkpoint)
        if prov.get("checkpoint_sha256") and sha != prov["checkpoint_sha256"]:
            raise S.ExportError(f"--checkpoint {args.checkpoint}: sha256 {sha[:12]}... is not the exported "
                                f"checkpoint's ({prov['checkpoint_sha256'][:12]}...)")
    model.eval()
    from sam3.model.sam3_image_processor import Sam3Processor
    res = info["image_size"]
    g = info["trunk"]["grid"]
    processor = Sam3Processor(model, resolution=res, device="cpu", confidence_threshold=0.0)
    predictor = model.inst_interactive_predictor
    predictor._bb_feat_sizes = [(4 * g, 4 * g), (2 * g, 2 * g), (g, g)]  # SAM3 hard-codes 1008's

    images = [os.path.join(args.images, n) for n in args.image_names]
    for p in images:
        if not os.path.isfile(p):
            raise S.ExportError(f"--images {args.images}: missing {os.path.basename(p)}")
    work = args.work or tempfile.mkdtemp(prefix="check_sam3_")
    os.makedirs(work, exist_ok=True)
    ann_path = os.path.join(work, "prompts.json")
    targets = None
    if args.targets:
        with open(args.targets) as f:
            targets = json.load(f)
        args.image_names = list(dict.fromkeys(list(args.image_names) + list(targets)))
        images = [os.path.join(args.images, n) for n in args.image_names]
        for p in images:
            if not os.path.isfile(p):
                raise S.ExportError(f"--targets names {os.path.basename(p)}, which is not in {args.images}")
    coco = write_annotations(ann_path, images, targets)
    anns = {a["id"]: a for a in coco["annotations"]}
    cat_name = {c["id"]: c["name"] for c in coco["categories"]}
    imgs = {i["id"]: i for i in coco["images"]}

    from PIL import Image
    results = []
    decoder = model.inst_interactive_predictor.model.sam_mask_decoder
    thresh = decoder.dynamic_multimask_stability_thresh
    for n_choice, choice in enumerate(args.mask_choices):
        t0 = time.time()
        bundle = args.bundle
        decoder.dynamic_multimask_stability_thresh = thresh
        if choice == "single0":
            # With random weights the single-mask output is rarely stable, so `single` mostly takes
            # SAM's fallback; a stability threshold of 0 on both sides exercises the token-0 path.
            bundle = single0_bundle(args.bundle, os.path.join(work, "bundle_single0"))
            decoder.dynamic_multimask_stability_thresh = 0.0
        rows = run_eval(args.eval, bundle, ann_path, args.images, os.path.join(work, f"eval_{choice}"),
                        "single" if choice == "single0" else choice, args.threads,
                        ["concept", "box", "point"] if n_choice == 0 else ["box", "point"])
        log(f"instinct-eval ({choice}): {len(rows)} prompts in {time.time() - t0:.1f} s")
        by_image = {}
        for r in rows:
            by_image.setdefault(r["image_id"], []).append(r)
        for image_id, image_rows in sorted(by_image.items()):
            im = imgs[image_id]
            h, w = im["height"], im["width"]
            pil = Image.open(os.path.join(args.images, im["file_name"])).convert("RGB")
            state = processor.set_image(pil)
            for r in image_rows:
                ours = coco_rle.decode(coco_rle.from_string(r["segmentation"]["counts"]), h, w).astype(bool)
                kind = r["prompt"]
                rec = {"mask_choice": choice, "image": im["file_name"], "annotation_id": r["annotation_id"],
                       "prompt": kind, "score_ours": r["score"]}
                if kind == "concept":
                    name = cat_name[anns[r["annotation_id"]]["category_id"]]
                    processor.reset_all_prompts(state)
                    out = processor.set_text_prompt(name, state)
                    top = int(out["scores"].argmax())
                    theirs = out["masks"][top, 0].numpy()
                    rec["score_sam3"] = float(out["scores"][top])
                    box = out["boxes"][top].numpy().astype(np.float64)
                    rec["box_err"] = float(np.max(np.abs(np.asarray(r["box"]) - box) / np.array([w, h, w, h])))
                    rec["phrase"] = name
                else:
                    kw = ({"box": np.array(r["prompt_box"], dtype=np.float32)} if kind == "box" else
                          {"point_coords": np.array([r["prompt_point"]], dtype=np.float32),
                           "point_labels": np.array([1], dtype=np.int32)})
                    masks, ious, _ = model.predict_inst(state, multimask_output=(choice == "best_iou"), **kw)
                    k = int(np.argmax(ious)) if choice == "best_iou" else 0
                    theirs = masks[k] > 0
                    rec["score_sam3"] = float(ious[k])
                rec["mask_iou"] = mask_iou(ours, theirs)
                rec["score_err"] = abs(rec["score_ours"] - rec["score_sam3"])
                rec["ok"] = (rec["mask_iou"] >= args.mask_iou and rec["score_err"] <= args.atol
                             and rec.get("box_err", 0.0) <= args.atol)
                results.append(rec)
    print(f"{'choice':9s} {'image':15s} {'prompt':8s} {'mask IoU':>9s} {'score ours':>11s} {'SAM3':>9s} "
          f"{'|d score|':>9s} {'box err':>8s}")
    for r in results:
        print(f"{r['mask_choice']:9s} {r['image']:15s} {r['prompt']:8s} {r['mask_iou']:9.5f} {r['score_ours']:11.6f} "
              f"{r['score_sam3']:9.6f} {r['score_err']:9.2e} {r.get('box_err', float('nan')):8.1e}"
              f"{'' if r['ok'] else '  MISMATCH'}")
    bad = [r for r in results if not r["ok"]]
    summary = {"prompts": len(results), "mismatches": len(bad),
               "min_mask_iou": min(r["mask_iou"] for r in results),
               "max_score_err": max(r["score_err"] for r in results),
               "max_box_err": max(r.get("box_err", 0.0) for r in results),
               "thresholds": {"mask_iou": args.mask_iou, "atol": args.atol}, "rows": results}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)
    log(f"{len(results)} prompts: min mask IoU {summary['min_mask_iou']:.5f}, max |score diff| "
        f"{summary['max_score_err']:.2e}, max box error {summary['max_box_err']:.2e} (of the image size); "
        f"{len(bad)} mismatches")
    return 1 if bad else 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", required=True, help="bundle directory written by scripts/export_sam3.py")
    p.add_argument("--checkpoint", help="the sam3.pt the bundle was exported from (not needed for random-init bundles)")
    p.add_argument("--sam3-src", default=os.environ.get("SAM3_SRC"), help="SAM3 source (default $SAM3_SRC)")
    p.add_argument("--timm-src", default=os.environ.get("INSTINCT_TIMM_SRC"), help="timm source if not installed")
    default_images = os.environ.get("SAM3_IMAGES") or (
        os.path.join(os.path.dirname(os.path.abspath(os.environ["SAM3_SRC"])), "images")
        if os.environ.get("SAM3_SRC") else None)
    p.add_argument("--images", default=default_images, help="directory of photographs (default $SAM3_IMAGES)")
    p.add_argument("--image-names", nargs="+", default=list(DEFAULT_IMAGES), help="files in --images to use")
    p.add_argument("--targets", help="JSON {image file: [[phrase, [x0, y0, x1, y1]], ...]} (pixels): your own prompts "
                                     "(box, its centroid click and the phrase) for those images")
    p.add_argument("--eval", default=os.path.join(ROOT, "build", "instinct-eval"), help="instinct-eval binary")
    p.add_argument("--mask-choices", nargs="+", default=["best_iou", "single", "single0"],
                   choices=["best_iou", "single", "single0"],
                   help="box/point mask choices to compare: best_iou, single (SAM3's multimask_output=False), "
                        "single0 (single with the stability threshold at 0 on both sides: always the single-mask token)")
    p.add_argument("--mask-iou", type=float, default=0.99, help="minimum mask IoU per prompt (default 0.99)")
    p.add_argument("--atol", type=float, default=1e-4, help="max score / box difference (default 1e-4)")
    p.add_argument("--threads", type=int, default=2, help="instinct-eval threads")
    p.add_argument("--work", help="working directory (default: a new temporary one)")
    p.add_argument("--json", help="write the comparison as JSON here")
    args = p.parse_args(argv)
    if not args.images:
        p.error("--images is required (or set SAM3_IMAGES / SAM3_SRC)")
    torch.set_num_threads(args.threads)
    try:
        return check(args)
    except S.ExportError as e:
        print(f"check_sam3_bundle: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
