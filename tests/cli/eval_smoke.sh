#!/usr/bin/env bash
# instinct-eval end to end on a small toy world: teacher + a student trunk; the table is printed, every
# report row carries image_id/prompt/iou and a mask; recomputing each IoU from the row's RLE and the
# ground truth with an independent Python implementation (scripts/coco_rle.py) reproduces the
# rows and the summary; cgF1 recomputed from the matched pairs; overlays are written; scoring the
# report's own rows as results files reproduces the summary; a missing image is skipped and counted;
# bad configs are one-line errors.
source "$(dirname "$0")/common.sh"
EVAL="$INSTINCT_BIN_DIR/instinct-eval"
"$PY" "$INSTINCT_SOURCE_DIR/scripts/make_toy_world.py" --out "$WORK/world" --train 4 --val 12 --seed 5 > /dev/null
# a student trunk: two Stage A steps on the toy images
"$TRAIN" stageA teacher.bundle="$BUNDLE" data.root="$WORK/world/train" "${TINY[@]}" data.eval_images=1 batch_size=2 \
  optim.max_steps=2 eval.every=0 run_dir="$WORK/stageA" > "$WORK/stageA.log" 2>&1 || { cat "$WORK/stageA.log"; fail "stageA"; }
rm "$WORK/world/val/$(ls "$WORK/world/val" | head -1)"   # one missing image
"$EVAL" annotations="$WORK/world/annotations/instances_val.json" images="$WORK/world/val" teacher="$BUNDLE" \
  "students=[tiny=$WORK/stageA/trunk.pt]" output="$WORK/eval" protocol.n_images=0 progress=lines \
  protocol.cgf1=true overlays=3 > "$WORK/eval.log" 2>&1 \
  || { cat "$WORK/eval.log"; fail "instinct-eval"; }
cat "$WORK/eval.log" | grep -A4 "^model"
grep -q "^teacher .*%" "$WORK/eval.log" || fail "no table row for the teacher"
grep -q "^tiny .*%" "$WORK/eval.log" || fail "no table row for the student"
grep -q "1 images skipped" "$WORK/eval.log" || fail "missing image not counted"
grep -q "concept cgF1" "$WORK/eval.log" || fail "no cgF1 column"
"$PY" - "$WORK" "$INSTINCT_SOURCE_DIR/scripts" <<'PYEOF'
import json, sys
import numpy as np
sys.path.insert(0, sys.argv[2])
import coco_rle
work = sys.argv[1]
rep = json.load(open(f"{work}/eval/report.json"))
gt = json.load(open(f"{work}/world/annotations/instances_val.json"))
imgs = {i["id"]: i for i in gt["images"]}
anns = {a["id"]: a for a in gt["annotations"]}
assert rep["images_skipped"] == 1, rep["images_skipped"]
rows = rep["rows"]
assert rows and all({"image_id", "prompt", "iou", "segmentation", "score"} <= set(r) for r in rows)
per = {}
for r in rows:
    im, a = imgs[r["image_id"]], anns[r["annotation_id"]]
    h, w = im["height"], im["width"]
    pred = coco_rle.decode(coco_rle.from_string(r["segmentation"]["counts"]), h, w)
    g = coco_rle.decode(coco_rle.segmentation(a["segmentation"], h, w), h, w)
    inter, union = np.logical_and(pred, g).sum(), np.logical_or(pred, g).sum()
    iou = inter / union if union else 0.0
    assert abs(iou - r["iou"]) < 1e-9, (r["image_id"], r["prompt"], iou, r["iou"])
    # the target is the largest non-crowd annotation of its image
    cands = [x for x in gt["annotations"] if x["image_id"] == r["image_id"] and not x["iscrowd"] and x["area"] >= 1]
    assert a["id"] == max(cands, key=lambda x: x["area"])["id"]
    per.setdefault((r["model"], r["prompt"]), []).append(iou)
for (model, prompt), v in per.items():
    s = rep["summary"][model][prompt]
    assert s["count"] == len(v) and abs(s["mean"] - float(np.mean(v))) < 1e-9, (model, prompt, s, np.mean(v))
    assert abs(s["median"] - float(np.median(v))) < 1e-9
assert set(m for m, _ in per) == {"teacher", "tiny"} and set(p for _, p in per) == {"box", "point", "concept"}
# cgF1 from the matched pairs (SAM3's definition, shared/reference/evaluation.md)
for model in ("teacher", "tiny"):
    pairs = [p for p in rep["cgf1_pairs"] if p["model"] == model]
    gt_cats = {(a["image_id"], a["category_id"]) for a in gt["annotations"] if not a["iscrowd"]}
    assert {(p["image_id"], p["category_id"]) for p in pairs if p["gt"] > 0} == \
        {k for k in gt_cats if k[0] in {r["image_id"] for r in rows}}
    for p in pairs:
        assert p["gt"] == sum(1 for a in gt["annotations"] if a["image_id"] == p["image_id"]
                              and a["category_id"] == p["category_id"] and not a["iscrowd"])
    tp_il = sum(p["gt"] > 0 and p["dt"] > 0 for p in pairs); fn_il = sum(p["gt"] > 0 and p["dt"] == 0 for p in pairs)
    fp_il = sum(p["gt"] == 0 and p["dt"] > 0 for p in pairs); tn_il = sum(p["gt"] == 0 and p["dt"] == 0 for p in pairs)
    d = (tp_il + fp_il) * (tp_il + fn_il) * (tn_il + fp_il) * (tn_il + fn_il)
    mcc = (tp_il * tn_il - fp_il * fn_il) / (d ** 0.5 + 1e-6)  # SAM3 CGF1Eval.accumulate, guards included
    f1s = []
    for t in np.arange(10) * 0.05 + 0.5:
        tp = sum(sum(v >= t - 1e-12 for v in p["ious"]) for p in pairs if p["gt"] > 0)
        fp = sum(p["dt"] for p in pairs if p["gt"] > 0) - tp
        fn = sum(p["gt"] for p in pairs if p["gt"] > 0) - tp
        pr, rc = tp / (tp + fp + 1e-4), tp / (tp + fn + 1e-4)
        f1s.append(2 * pr * rc / (pr + rc + 1e-4))
    s = rep["summary"][model]["cgf1"]
    assert abs(s["il_mcc"] - mcc) < 1e-9 and abs(s["cgf1"] - float(np.mean(f1s)) * mcc) < 1e-9, (s, mcc, f1s)
# overlays: one PNG per evaluated image among the first 3 selected (the missing image has none)
import os
first3 = sorted(imgs)[:3]
want = {f"{i}.png" for i in first3 if any(r["image_id"] == i for r in rows)}
assert set(os.listdir(f"{work}/eval/overlays")) == want, (os.listdir(f"{work}/eval/overlays"), want)
print(f"report ok: {len(rows)} rows recomputed independently")
PYEOF
# The report's rows are a COCO-style results file: scoring them reproduces the summary.
"$EVAL" --annotations "$WORK/world/annotations/instances_val.json" --predictions "teacher=$WORK/eval/report.json" \
  --predictions "tiny=$WORK/eval/report.json" --output "$WORK/files" protocol.n_images=0 progress=off > "$WORK/files.log" 2>&1 \
  || { cat "$WORK/files.log"; fail "instinct-eval --predictions"; }
"$PY" - "$WORK" <<'PYEOF'
import json, sys
work = sys.argv[1]
a, b = json.load(open(f"{work}/eval/report.json")), json.load(open(f"{work}/files/report.json"))
for m in ("teacher", "tiny"):
    for p in ("box", "point", "concept"):
        sa, sb = a["summary"][m][p], b["summary"][m][p]
        # the missing image has no rows: its targets count as missing (IoU 0) in file mode
        assert sb["count"] == sa["count"] + sb["missing"], (m, p, sa, sb)
        assert abs(sb["mean"] * sb["count"] - sa["mean"] * sa["count"]) < 1e-9, (m, p, sa, sb)
print("results-file mode reproduces the model-mode summary")
PYEOF
set +e
"$EVAL" annotations="$WORK/world/annotations/instances_val.json" images="$WORK/world/val" teacher="$BUNDLE" protocol.point=middle > "$WORK/bad.log" 2>&1
rc=$?
set -e
[ $rc -ne 0 ] && grep -q "\[error\].*protocol.point 'middle'" "$WORK/bad.log" || { cat "$WORK/bad.log"; fail "bad protocol value"; }
# a device that is not one is a user error (exit 2, one line naming it), as in the trainers
set +e
"$EVAL" annotations="$WORK/world/annotations/instances_val.json" images="$WORK/world/val" teacher="$BUNDLE" device=gpu > "$WORK/baddev.log" 2>&1
rc=$?
set -e
[ $rc -eq 2 ] && grep -q "\[error\] device 'gpu' is not valid; expected auto, cpu, cuda or cuda:N" "$WORK/baddev.log" \
  || { cat "$WORK/baddev.log"; fail "device=gpu: exit $rc, expected 2 with a one-line error"; }
echo "eval smoke ok"
