#!/usr/bin/env bash
# scripts/train_reference_teacher.py (the demo's proxy teacher) on a small category-palette world:
# a data-parallel run (--jobs 2, the default: the batch's two shards in two processes of one thread,
# gradients summed through gloo, each process computing half of the frozen-feature cache's two batches)
# and a one-process run of one thread (--jobs 1) write the same loss
# histories and bit-identical weights (the demo's determinism rests on this), and val metrics equal up
# to the evaluation's thread count (2 vs 1); the image-level counts of its cgF1 diagnostic cover exactly the
# phrases the protocol asks for (every present category plus two absent ones per val image, counted
# here from the annotations), cgF1 = pmF1 x IL_MCC; and the bundle it writes loads in instinct-eval
# with the demo's eval config (concept, box, point, cgF1). The two heads train independently: a run of
# the SAM head alone (--parts sam) has exactly the SAM losses of the full run, and one of grounding
# alone exactly its grounding losses. --eval-images 0 skips the val evaluation.
source "$(dirname "$0")/common.sh"
EVAL="$INSTINCT_BIN_DIR/instinct-eval"
"$PY" "$INSTINCT_SOURCE_DIR/scripts/make_toy_world.py" --out "$WORK/world" --train 20 --val 12 --seed 4 \
  --palette category > /dev/null
for run in a b; do
  jobs=2; [ $run = b ] && jobs=1
  "$PY" "$INSTINCT_SOURCE_DIR/scripts/train_reference_teacher.py" --world "$WORK/world" --out "$WORK/teacher_$run" \
    --steps 3 --batch-images 4 --eval-images 12 --threads $jobs --jobs $jobs > "$WORK/$run.log" 2>&1 \
    || { cat "$WORK/$run.log"; fail "teacher run $run"; }
done
for part in sam grounding; do
  evals=2; [ $part = grounding ] && evals=0
  "$PY" "$INSTINCT_SOURCE_DIR/scripts/train_reference_teacher.py" --world "$WORK/world" --out "$WORK/teacher_$part" \
    --steps 3 --batch-images 4 --eval-images $evals --threads 1 --parts $part > "$WORK/$part.log" 2>&1 \
    || { cat "$WORK/$part.log"; fail "teacher run --parts $part"; }
done
grep -q "^cgF1 " "$WORK/a.log" || { cat "$WORK/a.log"; fail "no cgF1 line"; }
grep -q "^val evaluation skipped" "$WORK/grounding.log" || { cat "$WORK/grounding.log"; fail "--eval-images 0 evaluated"; }
"$PY" - "$WORK" <<'PYEOF'
import json, math, sys
w = sys.argv[1]
a, b = (json.load(open(f"{w}/teacher_{r}/train_log.json")) for r in "ab")
assert a["steps"] == 3, a["steps"]
import torch
untimed = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]
assert a["history"] and untimed(a["history"]) == untimed(b["history"]), ("--jobs 2 vs 1: loss histories", a, b)
for m in ("detector_neck", "grounding", "interactive_neck", "sam_head"):
    wa, wb = (torch.jit.load(f"{w}/teacher_{r}/{m}.pt").state_dict() for r in "ab")
    assert all(torch.equal(wa[k], wb[k]) for k in wa), ("--jobs 2 vs 1: different weights", m)
for k, v in a["val_metrics"].items():
    if isinstance(v, float):
        assert abs(v - b["val_metrics"][k]) < 1e-5, ("--jobs 2 vs 1: val metrics", k, v, b["val_metrics"][k])
for part, keys in (("sam", ("sam_mask", "sam_iou", "best_iou")), ("grounding", ("cls", "pres", "mbce", "dice", "score"))):
    alone = json.load(open(f"{w}/teacher_{part}/train_log.json"))["history"]
    assert [[r[k] for k in keys] for r in alone] == [[r[k] for k in keys] for r in a["history"]], (part, alone, a["history"])
    other = "cls" if part == "sam" else "sam_mask"
    assert (json.load(open(f"{w}/teacher_{part}/train_log.json"))["val_metrics"] is None) == (part == "grounding")
    assert all(other not in r for r in alone), (part, alone)
m = a["val_metrics"]
coco = json.load(open(f"{w}/world/annotations/instances_val.json"))
names = {c["id"]: c["name"] for c in coco["categories"]}
phrases = 0  # absent phrases are drawn, as instinct-eval draws them, from the file's categories
for im in coco["images"]:
    anns = [x for x in coco["annotations"] if x["image_id"] == im["id"]]
    present = {names[x["category_id"]] for x in anns if not x["iscrowd"]}
    annotated = {names[x["category_id"]] for x in anns}
    phrases += len(present) + min(2, len(names) - len(annotated))
il = m["il_counts"]
assert sum(il.values()) == phrases, (il, phrases)
assert len(m["pmf1_per_threshold"]) == 10
assert abs(m["cgf1"] - m["pmf1"] * m["il_mcc"]) < 1e-6, m
for k in ("concept_miou", "box_miou", "point_miou"):
    assert 0.0 <= m[k] <= 1.0, (k, m[k])
print(f"deterministic; {phrases} phrases counted; cgF1 {m['cgf1']:.3f}")
PYEOF
"$EVAL" --config "$INSTINCT_SOURCE_DIR/configs/eval_toy_cpu.yaml" annotations="$WORK/world/annotations/instances_val.json" \
  images="$WORK/world/val" teacher="$WORK/teacher_a" students=[] output="$WORK/eval" progress=off threads=2 \
  overlays=0 > "$WORK/eval.log" 2>&1 || { cat "$WORK/eval.log"; fail "instinct-eval on the trained teacher"; }
"$PY" - "$WORK/eval/report.json" "$WORK/teacher_a/train_log.json" <<'PYEOF'
import json, sys
s = json.load(open(sys.argv[1]))["summary"]["teacher"]
for k in ("concept", "box", "point"):
    assert 0.0 <= s[k]["mean"] <= 1.0, (k, s[k])
# The trainer's cgF1 diagnostic prompts the absent categories instinct-eval draws: same counts.
m = json.load(open(sys.argv[2]))["val_metrics"]
assert s["cgf1"]["il_counts"] == m["il_counts"], (s["cgf1"]["il_counts"], m["il_counts"])
assert abs(s["cgf1"]["cgf1"] - m["cgf1"]) < 1e-3, (s["cgf1"]["cgf1"], m["cgf1"])
PYEOF
# The SAM head (and trunk, necks) draw their initial weights before grounding: a grounding of another
# size leaves them as they were, so grounding experiments do not redraw the SAM head.
"$PY" - "$INSTINCT_SOURCE_DIR/scripts" <<'PYEOF'
import sys
import torch
sys.path.insert(0, sys.argv[1])
import make_reference_teacher as mrt
base, _ = mrt.build("tiny", 0)
class Wider(mrt.Grounding):
    def __init__(self, D, *args):
        super().__init__(D, *args)
        self.extra = torch.nn.Linear(D, 3 * D)
mrt.Grounding = Wider
other, _ = mrt.build("tiny", 0)
for k in ("trunk", "detector_neck", "interactive_neck", "sam_head", "concept_bank"):
    a, b = base[k].state_dict(), other[k].state_dict()
    assert all(torch.equal(a[n], b[n]) for n in a), k
assert "extra.weight" in other["grounding"].state_dict()
PYEOF
echo "reference teacher: trains deterministically, counts its phrases as instinct-eval does, loads in it; SAM head init independent of grounding"
