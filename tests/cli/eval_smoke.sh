#!/usr/bin/env bash
# instinct-eval end to end on a small toy world: teacher + a student trunk; the table is printed, every
# report row carries image_id/prompt/iou and a mask; recomputing each IoU from the row's RLE and the
# ground truth with an independent Python implementation (tests/python/coco_ref.py) reproduces the
# rows and the summary; a missing image is skipped and counted; bad configs are one-line errors.
source "$(dirname "$0")/common.sh"
EVAL="$INSTINCT_BIN_DIR/instinct-eval"
"$PY" "$INSTINCT_SOURCE_DIR/scripts/make_toy_world.py" --out "$WORK/world" --train 4 --val 12 --seed 5 > /dev/null
# a student trunk: two Stage A steps on the toy images
"$TRAIN" stageA teacher.bundle="$BUNDLE" data.root="$WORK/world/train" "${TINY[@]}" data.eval_images=1 batch_size=2 \
  optim.max_steps=2 eval.every=0 run_dir="$WORK/stageA" > "$WORK/stageA.log" 2>&1 || { cat "$WORK/stageA.log"; fail "stageA"; }
rm "$WORK/world/val/$(ls "$WORK/world/val" | head -1)"   # one missing image
"$EVAL" annotations="$WORK/world/annotations/instances_val.json" images="$WORK/world/val" teacher="$BUNDLE" \
  "students=[tiny=$WORK/stageA/trunk.pt]" output="$WORK/eval" protocol.n_images=0 progress=lines > "$WORK/eval.log" 2>&1 \
  || { cat "$WORK/eval.log"; fail "instinct-eval"; }
cat "$WORK/eval.log" | grep -A4 "^model"
grep -q "^teacher .*%" "$WORK/eval.log" || fail "no table row for the teacher"
grep -q "^tiny .*%" "$WORK/eval.log" || fail "no table row for the student"
grep -q "1 images skipped" "$WORK/eval.log" || fail "missing image not counted"
"$PY" - "$WORK" "$INSTINCT_SOURCE_DIR/tests/python" <<'PYEOF'
import json, sys
import numpy as np
sys.path.insert(0, sys.argv[2])
import coco_ref
work = sys.argv[1]
rep = json.load(open(f"{work}/eval/report.json"))
gt = json.load(open(f"{work}/world/annotations/instances_val.json"))
imgs = {i["id"]: i for i in gt["images"]}
anns = {a["id"]: a for a in gt["annotations"]}
assert rep["images_skipped"] == 1, rep["images_skipped"]
rows = rep["rows"]
assert rows and all({"image_id", "prompt", "iou", "mask", "score"} <= set(r) for r in rows)
per = {}
for r in rows:
    im, a = imgs[r["image_id"]], anns[r["annotation_id"]]
    h, w = im["height"], im["width"]
    pred = coco_ref.decode(coco_ref.from_string(r["mask"]["counts"]), h, w)
    g = coco_ref.decode(coco_ref.segmentation(a["segmentation"], h, w), h, w)
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
print(f"report ok: {len(rows)} rows recomputed independently")
PYEOF
set +e
"$EVAL" annotations="$WORK/world/annotations/instances_val.json" images="$WORK/world/val" teacher="$BUNDLE" protocol.point=middle > "$WORK/bad.log" 2>&1
rc=$?
set -e
[ $rc -ne 0 ] && grep -q "\[error\].*protocol.point 'middle'" "$WORK/bad.log" || { cat "$WORK/bad.log"; fail "bad protocol value"; }
echo "eval smoke ok"
