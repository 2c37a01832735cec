#!/usr/bin/env bash
# instinct-eval's model mode (teacher bundle; box, point and concept prompts) against an independent
# Python implementation (tests/python/eval_ref.py: PIL decoding, torch preprocessing, torch.jit.load of
# the bundle's modules, torch mask post-processing), for a "squash" bundle (the fixture teacher) and a
# copy whose bundle.json says "longest_pad" (module hashes cover the .pt files only, so they stay
# valid). Per report row: the decoded RLE mask vs the Python mask has IoU >= 0.99 (or both empty),
# |score diff| < 1e-3, kept equal (unless the score is within 1e-4 of the threshold), the row's iou
# within 0.01 of the Python mask's IoU with the ground truth. longest_pad must change at least one
# prediction vs squash, so the longest_pad checks cannot pass vacuously.
source "$(dirname "$0")/common.sh"
EVAL="$INSTINCT_BIN_DIR/instinct-eval"
N=6
"$PY" "$INSTINCT_SOURCE_DIR/scripts/make_toy_world.py" --out "$WORK/world" --train 1 --val $N --seed 8 > /dev/null
cp -r "$BUNDLE" "$WORK/pad"
"$PY" - "$WORK/pad/bundle.json" <<'PYEOF'
import json, sys
p = sys.argv[1]
b = json.load(open(p))
assert b["resize"] == "squash", b["resize"]
b["resize"] = "longest_pad"
json.dump(b, open(p, "w"), indent=2)
PYEOF
for mode in squash pad; do
  bundle="$BUNDLE"; [ $mode = pad ] && bundle="$WORK/pad"
  "$EVAL" annotations="$WORK/world/annotations/instances_val.json" images="$WORK/world/val" teacher="$bundle" \
    output="$WORK/eval_$mode" protocol.n_images=$N protocol.targets=largest protocol.point=centroid \
    protocol.concept_threshold=0.5 device=cpu threads=2 workers=1 progress=off > "$WORK/eval_$mode.log" 2>&1 \
    || { cat "$WORK/eval_$mode.log"; fail "instinct-eval ($mode)"; }
done
"$PY" "$INSTINCT_SOURCE_DIR/tests/python/eval_ref.py" --annotations "$WORK/world/annotations/instances_val.json" \
  --images "$WORK/world/val" --bundle "squash=$BUNDLE" --bundle "pad=$WORK/pad" --n-images $N --threshold 0.5 \
  --threads 2 --out "$WORK/ref.json" > "$WORK/ref.log" 2>&1 || { cat "$WORK/ref.log"; fail "eval_ref.py"; }
"$PY" - "$WORK" "$INSTINCT_SOURCE_DIR/scripts" <<'PYEOF'
import json, sys
import numpy as np
sys.path.insert(0, sys.argv[2])
import coco_rle
work = sys.argv[1]
gt = json.load(open(f"{work}/world/annotations/instances_val.json"))
imgs = {i["id"]: i for i in gt["images"]}
THR = 0.5

def mask_iou(a, b):
    u = np.logical_or(a, b).sum()
    return 1.0 if u == 0 else float(np.logical_and(a, b).sum()) / float(u)

masks = {}
problems = []
for mode in ("squash", "pad"):
    rep = json.load(open(f"{work}/eval_{mode}/report.json"))
    ref = json.load(open(f"{work}/ref.json"))[mode]
    rows = [r for r in rep["rows"] if r["model"] == "teacher"]
    key = lambda r: (r["image_id"], r["prompt"])
    cpp = {key(r): r for r in rows}
    py = {key(r): r for r in ref}
    assert len(cpp) == len(rows) and set(cpp) == set(py), (mode, sorted(set(cpp) ^ set(py)))
    assert {p for _, p in cpp} == {"box", "point", "concept"} and len({i for i, _ in cpp}) >= 5, sorted(cpp)
    dev = {"mask_iou_min": 1.0, "pixels_diff_max": 0, "score": 0.0, "iou_field": 0.0}
    for k in sorted(cpp):
        c, p = cpp[k], py[k]
        im = imgs[k[0]]
        h, w = im["height"], im["width"]
        assert c["annotation_id"] == p["annotation_id"] and c["category_id"] == p["category_id"], (mode, k, c, p)
        assert c["segmentation"]["size"] == [h, w], (mode, k, c["segmentation"]["size"])
        cm = coco_rle.decode(coco_rle.from_string(c["segmentation"]["counts"]), h, w).astype(bool)
        pm = coco_rle.decode(p["counts"], h, w).astype(bool)
        masks[(mode,) + k] = (cm, c["score"])
        ds = abs(c["score"] - p["score"])
        dev["score"] = max(dev["score"], ds)
        if ds >= 1e-3:
            problems.append(f"{mode} {k}: score C++ {c['score']:.6f} vs Python {p['score']:.6f}")
        borderline = k[1] == "concept" and abs(p["score"] - THR) < 1e-4
        if c["kept"] != p["kept"]:
            if not borderline:
                problems.append(f"{mode} {k}: kept C++ {c['kept']} vs Python {p['kept']} (score {p['score']:.6f})")
            continue  # masks differ by construction (one of them is empty)
        mi = mask_iou(cm, pm)
        dev["mask_iou_min"] = min(dev["mask_iou_min"], mi)
        dev["pixels_diff_max"] = max(dev["pixels_diff_max"], int((cm != pm).sum()))
        if mi < 0.99:
            problems.append(f"{mode} {k}: mask IoU C++ vs Python {mi:.4f} ({int(cm.sum())} vs {int(pm.sum())} px, "
                            f"{int((cm != pm).sum())} differ)")
        di = abs(c["iou"] - p["iou"])
        dev["iou_field"] = max(dev["iou_field"], di)
        if di >= 0.01:
            problems.append(f"{mode} {k}: iou C++ {c['iou']:.4f} vs Python {p['iou']:.4f}")
    kept = sum(r["kept"] for r in rows if r["prompt"] == "concept")
    if kept == 0:  # else no concept mask would be compared
        problems.append(f"{mode}: no concept row kept")
    print(f"{mode}: {len(rows)} rows ({kept} concept kept); min mask IoU {dev['mask_iou_min']:.5f}, "
          f"max differing pixels {dev['pixels_diff_max']}, max |score diff| {dev['score']:.2e}, "
          f"max |iou diff| {dev['iou_field']:.2e}")
# longest_pad really changes the predictions (for the C++ tool and for the reference)
changed = 0
for (mode, iid, prompt), (cm, sc) in masks.items():
    if mode != "squash":
        continue
    pm, ps = masks[("pad", iid, prompt)]
    if mask_iou(cm, pm) < 0.95 or abs(sc - ps) > 1e-2:
        changed += 1
print(f"longest_pad vs squash: {changed} of {sum(m == 'squash' for m, _, _ in masks)} rows changed")
if changed == 0:
    problems.append("longest_pad gives the same predictions as squash: the padded path is not exercised")
if problems:
    print("\n".join(problems))
    sys.exit(1)
PYEOF
echo "eval parity ok"
