#!/usr/bin/env bash
# instinct-eval --predictions: a results file built here (perturbed ground-truth masks, several
# instances per concept with varied scores, a false positive on an absent category, missing rows) is
# scored exactly as an independent Python implementation scores it (coco_rle for masks, scipy's
# linear_sum_assignment for cgF1 matching); bad results files are one-line errors with exit code 2.
source "$(dirname "$0")/common.sh"
EVAL="$INSTINCT_BIN_DIR/instinct-eval"
"$PY" "$INSTINCT_SOURCE_DIR/scripts/make_toy_world.py" --out "$WORK/world" --train 2 --val 14 --seed 11 > /dev/null
GT="$WORK/world/annotations/instances_val.json"
"$PY" - "$WORK" "$INSTINCT_SOURCE_DIR/scripts" <<'PYEOF'
import json, sys
import numpy as np
from scipy.optimize import linear_sum_assignment
sys.path.insert(0, sys.argv[2])
import coco_rle
work = sys.argv[1]
gt = json.load(open(f"{work}/world/annotations/instances_val.json"))
rng = np.random.default_rng(0)
imgs = sorted(gt["images"], key=lambda i: i["id"])
anns = {}
for a in gt["annotations"]:
    anns.setdefault(a["image_id"], []).append(a)
def mask_of(a, h, w):
    return coco_rle.decode(coco_rle.segmentation(a["segmentation"], h, w), h, w).astype(bool)
def rle(m):
    return {"size": list(m.shape), "counts": coco_rle.to_string(coco_rle.encode(m.astype(np.uint8)))}
def perturb(m):
    dy, dx = rng.integers(-6, 7, 2)
    return np.roll(np.roll(m, dy, 0), dx, 1)
def iou(p, g):
    u = np.logical_or(p, g).sum()
    return float(np.logical_and(p, g).sum() / u) if u else 0.0
cats = sorted(c["id"] for c in gt["categories"])
rows, expect = [], {"box": [], "point": [], "concept": []}
pairs = []
for k, im in enumerate(imgs):
    h, w, iid = im["height"], im["width"], im["id"]
    ia = anns.get(iid, [])
    masks = {a["id"]: mask_of(a, h, w) for a in ia}
    # box rows for every instance (annotation_id given), a worse decoy with a lower score for each
    for a in ia:
        good, bad = perturb(masks[a["id"]]), np.zeros((h, w), bool)
        rows.append({"image_id": iid, "prompt": "box", "annotation_id": a["id"], "segmentation": rle(good), "score": 0.9})
        rows.append({"image_id": iid, "prompt": "box", "annotation_id": a["id"], "segmentation": rle(bad), "score": 0.2})
        a["_box"] = good
    # point rows without annotation_id (targets: largest), none for every third image (missing)
    point = None
    if k % 3 != 0 and ia:
        cand = [a for a in ia if not a["iscrowd"] and a["area"] >= 1]
        if cand:
            point = perturb(masks[max(cand, key=lambda a: a["area"])["id"]])
            rows.append({"image_id": iid, "prompt": "point", "segmentation": rle(point)})
    # concept rows: each non-crowd instance with a random score, plus a false positive on an absent category
    conc = {}
    for a in ia:
        if a["iscrowd"]:
            continue
        s = float(rng.uniform(0.3, 0.95))
        m = perturb(masks[a["id"]])
        rows.append({"image_id": iid, "prompt": "concept", "category_id": a["category_id"], "segmentation": rle(m), "score": s})
        conc.setdefault(a["category_id"], []).append((s, m))
    absent = [c for c in cats if c not in {a["category_id"] for a in ia}]
    if k % 2 == 0 and absent:
        c = absent[0]
        m = np.zeros((h, w), bool); m[: h // 3, : w // 3] = True
        rows.append({"image_id": iid, "prompt": "concept", "category_id": c, "segmentation": rle(m), "score": 0.8})
        conc.setdefault(c, []).append((0.8, m))
    # expected scores: largest non-crowd target (ties: first listed)
    cand = [a for a in ia if not a["iscrowd"] and a["area"] >= 1]
    if cand:
        t = cand[0]
        for a in cand:
            if a["area"] > t["area"]:
                t = a
        g = masks[t["id"]]
        expect["box"].append(iou(t["_box"], g))
        expect["point"].append(iou(point, g) if point is not None else 0.0)
        inst = conc.get(t["category_id"], [])
        top = max(inst, key=lambda x: x[0]) if inst else None
        expect["concept"].append(iou(top[1], g) if top and top[0] >= 0.5 else 0.0)
    # cgF1 pairs: every category (cgf1_absent large: all absent categories are evaluated)
    present = {a["category_id"] for a in ia if not a["iscrowd"]}
    annotated = {a["category_id"] for a in ia}
    for c in cats:
        if c in annotated and c not in present:
            continue  # crowd-only category: neither present nor absent
        g = [masks[a["id"]] for a in ia if a["category_id"] == c and not a["iscrowd"]]
        d = [m for s, m in conc.get(c, []) if s >= 0.5]
        ious = []
        if g and d:
            M = np.array([[iou(dm, gm) for dm in d] for gm in g])
            r_, c_ = linear_sum_assignment(M, maximize=True)
            ious = list(M[r_, c_])
        pairs.append((len(g), len(d), ious))
tp_il = sum(g > 0 and d > 0 for g, d, _ in pairs); fn_il = sum(g > 0 and d == 0 for g, d, _ in pairs)
fp_il = sum(g == 0 and d > 0 for g, d, _ in pairs); tn_il = sum(g == 0 and d == 0 for g, d, _ in pairs)
den = (tp_il + fp_il) * (tp_il + fn_il) * (tn_il + fp_il) * (tn_il + fn_il)
mcc = (tp_il * tn_il - fp_il * fn_il) / (den ** 0.5 + 1e-6)  # SAM3 CGF1Eval.accumulate, guards included
f1 = []
for t in 0.5 + 0.05 * np.arange(10):
    tp = sum(sum(v >= t - 1e-12 for v in ious) for g, d, ious in pairs if g > 0)
    fp = sum(d for g, d, _ in pairs if g > 0) - tp
    fn = sum(g for g, d, _ in pairs if g > 0) - tp
    pr, rc = tp / (tp + fp + 1e-4), tp / (tp + fn + 1e-4)
    f1.append(2 * pr * rc / (pr + rc + 1e-4))
json.dump(rows, open(f"{work}/results.json", "w"))
json.dump({"means": {p: float(np.mean(v)) for p, v in expect.items()}, "counts": {p: len(v) for p, v in expect.items()},
           "cgf1": float(np.mean(f1)) * mcc, "il_mcc": mcc, "pmf1": float(np.mean(f1)), "pairs": len(pairs)},
          open(f"{work}/expected.json", "w"))
print(f"{len(rows)} prediction rows, {len(pairs)} cgF1 pairs, expected cgF1 {np.mean(f1) * mcc:.4f}")
PYEOF
"$EVAL" --annotations "$GT" --predictions "$WORK/results.json" --output "$WORK/out" protocol.n_images=0 \
  protocol.cgf1=true protocol.cgf1_absent=1000 progress=off > "$WORK/eval.log" 2>&1 || { cat "$WORK/eval.log"; fail "instinct-eval --predictions"; }
grep -A2 "^model" "$WORK/eval.log"
"$PY" - "$WORK" <<'PYEOF'
import json, sys
work = sys.argv[1]
rep, exp = json.load(open(f"{work}/out/report.json")), json.load(open(f"{work}/expected.json"))
s = rep["summary"]["results"]
for p in ("box", "point", "concept"):
    assert s[p]["count"] == exp["counts"][p], (p, s[p], exp["counts"][p])
    assert abs(s[p]["mean"] - exp["means"][p]) < 1e-9, (p, s[p]["mean"], exp["means"][p])
assert s["point"]["missing"] > 0 and s["box"]["missing"] == 0
c = s["cgf1"]
assert c["pairs"] == exp["pairs"], (c["pairs"], exp["pairs"])
for k in ("cgf1", "il_mcc", "pmf1"):
    assert abs(c[k] - exp[k]) < 1e-9, (k, c[k], exp[k])
assert all({"image_id", "prompt", "iou"} <= set(r) for r in rep["rows"])
print(f"results file scored as the Python reference does (cgF1 {c['cgf1']:.4f})")
PYEOF
# Bad results files: one line naming the file, the row and the key; exit code 2; no report written.
bad() {  # bad NAME PYTHON_EDIT EXPECTED_REGEX
  "$PY" -c "import json,sys; r=json.load(open('$WORK/results.json')); $2; json.dump(r, open('$WORK/$1.json','w'))"
  set +e
  "$EVAL" --annotations "$GT" --predictions "$WORK/$1.json" --output "$WORK/bad_$1" progress=off > "$WORK/$1.log" 2>&1
  local rc=$?
  set -e
  [ $rc -eq 2 ] && grep -qE "$3" "$WORK/$1.log" && [ ! -e "$WORK/bad_$1/report.json" ] \
    || { cat "$WORK/$1.log"; fail "$1: rc=$rc, expected 2 and /$3/"; }
}
bad rle "r[3]['segmentation']['counts'] = r[3]['segmentation']['counts'] + '~'" "\[error\].*row 3 .*"
bad image "r[0]['image_id'] = 987654" "\[error\].*row 0: image_id 987654 is not an image of"
bad score "del [x for x in r if x['prompt'] == 'concept'][0]['score']" "\[error\].*concept rows need a score"
bad prompt "r[1]['prompt'] = 'text'" "\[error\].*row 1: prompt 'text' is unknown"
bad size "r[2]['segmentation']['size'] = [5, 5]" "\[error\].*row 2 .*size"
set +e
"$EVAL" --annotations "$GT" --predictions "$WORK/nonexistent.json" > "$WORK/nofile.log" 2>&1; rc=$?
set -e
[ $rc -eq 2 ] && grep -q "cannot be opened" "$WORK/nofile.log" || { cat "$WORK/nofile.log"; fail "missing results file"; }
echo "eval predictions ok"
