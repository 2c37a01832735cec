#!/usr/bin/env bash
# scripts/plot_runs.py on a real Stage A run and a real concept run: the panels found in their
# metrics.jsonl (every loss term, Stage A cosine with its baseline, the concept metrics raw and EMA,
# LR, throughput) carry the logged values; the PNG decodes at the requested size with both run
# colours drawn; a torn last line is skipped with a warning; a missing run directory, a missing or
# empty metrics.jsonl and a malformed line are one-line errors with exit 2 that write nothing (an
# existing PNG stays as it was).
source "$(dirname "$0")/common.sh"
PLOT=("$PY" "$INSTINCT_SOURCE_DIR/scripts/plot_runs.py")
"$PY" "$INSTINCT_SOURCE_DIR/scripts/make_toy_world.py" --out "$WORK/world" --train 8 --val 1 --seed 3 > /dev/null
common=(teacher.bundle="$BUNDLE" data.root="$WORK/world/train" "${TINY[@]}" batch_size=2 data.eval_images=2
        optim.warmup_steps=1 log.every=1 checkpoint.every=0 ema.enabled=true ema.decay=0.9 seed=5)
"$TRAIN" stageA "${common[@]}" optim.max_steps=6 eval.every=3 run_dir="$WORK/runs/stageA_toy" > "$WORK/stageA.log" 2>&1 \
  || { cat "$WORK/stageA.log"; fail "stageA run"; }
"$TRAIN" concept "${common[@]}" concepts.scan=2 init.from=random optim.max_steps=4 eval.every=2 \
  run_dir="$WORK/runs/concept_toy" > "$WORK/concept.log" 2>&1 || { cat "$WORK/concept.log"; fail "concept run"; }
A="$WORK/runs/stageA_toy" C="$WORK/runs/concept_toy"

"${PLOT[@]}" --help > "$WORK/help.txt"
for opt in --out --title --size --dpi --add --skip "torn last line" "exit" "atomically"; do
  grep -qF -- "$opt" "$WORK/help.txt" || fail "--help does not mention $opt"
done

# Both runs in one figure, default size, then a fixed size; stdout is the output path.
out=$("${PLOT[@]}" "$A" "$C" --out "$WORK/plots/both.png" --title "toy runs" 2> "$WORK/both.err") \
  || { cat "$WORK/both.err"; fail "plot of both runs"; }
[ "$out" = "$WORK/plots/both.png" ] || fail "printed '$out', expected the output path"
grep -q "note: loss_trunk is 0 in every train row" "$WORK/both.err" || { cat "$WORK/both.err"; fail "no note on the switched-off term"; }
"${PLOT[@]}" "$C" "$A" --out "$WORK/plots/small.png" --size 10x6 --dpi 60 > /dev/null 2>&1 || fail "plot with --size"
"$PY" - "$INSTINCT_SOURCE_DIR/scripts" "$A" "$C" "$WORK/plots" <<'PYEOF'
import json, math, os, sys
import numpy as np
from PIL import Image
sys.path.insert(0, sys.argv[1])
import plot_runs as pr
A, C, plots = sys.argv[2:5]
runs = [pr.load_run(A), pr.load_run(C)]
pr.name_runs(runs)
assert [r.name for r in runs] == ["stageA_toy", "concept_toy"], [r.name for r in runs]
panels, notes = pr.plan_panels(runs)
by = {(p.kind, p.key): p for p in panels}
rows = [[json.loads(l) for l in open(f"{d}/metrics.jsonl")] for d in (A, C)]
# Every loss* key of the train rows has its panel (loss_trunk: 0 throughout, left out with a note).
for i, rr in enumerate(rows):
    for k in {k for r in rr if r["split"] == "train" for k in r if k.startswith("loss")} - {"loss_trunk"}:
        assert ("train", k) in by, (i, k, sorted(by))
assert ("train", "loss_trunk") not in by and any("loss_trunk" in n for n in notes), notes
for k in ("loss_cos", "loss_mse", "loss_class", "loss_mask", "loss_align"):
    assert ("train", k) in by
assert by[("train", "loss")].log_y and {ln.run_index for ln in by[("train", "loss")].lines} == {0, 1}
# Held-out: Stage A cosine raw + EMA + its baseline; concept metrics raw + EMA; values as logged.
def logged(i, split, key):
    return sorted((r["step"], r[key]) for r in rows[i] if r["split"] == split and key in r)
def drawn(panel, i, role):
    ln = [l for l in by[panel].lines if l.run_index == i and l.role == role]
    assert len(ln) == 1, (panel, i, role, [(l.run_index, l.role) for l in by[panel].lines])
    return list(zip(ln[0].steps, ln[0].values))
assert drawn(("eval", "cosine"), 0, "raw") == logged(0, "eval", "cosine")
assert drawn(("eval", "cosine"), 0, "ema") == logged(0, "eval_ema", "cosine")
assert drawn(("eval", "cosine"), 0, "baseline") == logged(0, "eval", "cosine_baseline")
assert ("eval", "cosine_baseline") not in by, "the baseline is a reference line, not a panel"
for k in ("concept_mask_iou", "presence_agreement", "matched_box_iou", "matched_mask_iou", "trunk_cosine"):
    assert drawn(("eval", k), 1, "raw") == logged(1, "eval", k), k
    assert drawn(("eval", k), 1, "ema") == logged(1, "eval_ema", k), k
    assert len(logged(1, "eval", k)) == 3 and len(logged(1, "eval_ema", k)) == 2, k
for k in ("lr", "images_per_s"):
    assert drawn(("train", k), 0, "train") == logged(0, "train", k) and len(logged(0, "train", k)) == 6, k
    assert drawn(("train", k), 1, "train") == logged(1, "train", k) and len(logged(1, "train", k)) == 4, k
order = [p.key for p in panels]
assert order[0] == "loss" and order[-2:] == ["lr", "images_per_s"], order
# --skip and --add select panels.
keys = [p.key for p in pr.plan_panels(runs, add=["grad_norm"], skip=["loss_*", "eval/mse"])[0]]
assert "grad_norm" in keys and "loss" in keys and "mse" not in keys and not any(k.startswith("loss_") for k in keys), keys

def check_png(path, size):
    im = Image.open(path)
    assert im.format == "PNG" and im.size == size, (path, im.format, im.size, size)
    px = np.asarray(im.convert("RGB")).reshape(-1, 3)
    colours, counts = np.unique(px, axis=0, return_counts=True)
    assert len(colours) > 50, (path, len(colours))            # lines, text, antialiasing: not blank
    assert (px == 255).all(axis=1).mean() < 0.95, path       # mostly white, not all white
    for rgb in ((31, 119, 180), (255, 127, 14)):             # tab10 C0 / C1: one colour per run
        n = counts[(colours == rgb).all(axis=1)].sum()
        assert n >= 30, (path, rgb, n)
w, h = pr.default_size(len(panels))
check_png(f"{plots}/both.png", (round(w * 110), round(h * 110)))
assert (w, h) == (14.0, max(9.0, 2.3 * pr.grid_shape(len(panels))[0]))
check_png(f"{plots}/small.png", (600, 360))
assert sorted(os.listdir(plots)) == ["both.png", "small.png"], os.listdir(plots)  # no temporary files
print(f"{len(panels)} panels; both.png {Image.open(f'{plots}/both.png').size}")
PYEOF

# A torn last line (a run killed mid-write): skipped with a warning naming it, the plot is made.
cp -r "$C" "$WORK/runs/torn"
n=$(( $(wc -l < "$WORK/runs/torn/metrics.jsonl") + 1 ))
printf '{"bad_steps":0,"epoch":2,"grad_norm":3.5,"images_per_s":1.2,"loss":5.' >> "$WORK/runs/torn/metrics.jsonl"
"${PLOT[@]}" "$WORK/runs/torn" --out "$WORK/torn.png" --size 6x4 --dpi 50 > /dev/null 2> "$WORK/torn.err" \
  || { cat "$WORK/torn.err"; fail "torn last line: the plot failed"; }
grep -qE "^plot_runs.py: warning: .*runs/torn/metrics.jsonl:$n: incomplete last line skipped" "$WORK/torn.err" \
  || { cat "$WORK/torn.err"; fail "torn last line: no warning naming line $n"; }
[ -s "$WORK/torn.png" ] || fail "torn last line: no PNG"

# Errors: one line naming the file (and line), exit 2, nothing written; an existing PNG is kept as it was.
mkdir -p "$WORK/err" "$WORK/runs/nometrics" "$WORK/runs/empty"
: > "$WORK/runs/empty/metrics.jsonl"
cp -r "$A" "$WORK/runs/midbad" && sed -i '3s/.*/{"step": 2, "split": "train", "loss": 1.0,/' "$WORK/runs/midbad/metrics.jsonl"
cp -r "$A" "$WORK/runs/lastbad" && printf '{"step": 9, "split": "train", "loss": \n' >> "$WORK/runs/lastbad/metrics.jsonl"
nl=$(wc -l < "$WORK/runs/lastbad/metrics.jsonl")
cp -r "$A" "$WORK/runs/nostep" && sed -i '2s/.*/{"split": "train", "loss": 1.0}/' "$WORK/runs/nostep/metrics.jsonl"
cp "$WORK/plots/small.png" "$WORK/err/kept.png"
expect_error() {  # expect_error NAME REGEX RUN_DIR...
  local name=$1 re=$2 rc; shift 2
  set +e
  "${PLOT[@]}" "$@" --out "$WORK/err/$name.png" > "$WORK/$name.out" 2> "$WORK/$name.err"
  rc=$?
  "${PLOT[@]}" "$@" --out "$WORK/err/kept.png" > /dev/null 2>&1
  set -e
  [ $rc -eq 2 ] || { cat "$WORK/$name.err"; fail "$name: exit $rc, expected 2"; }
  [ "$(wc -l < "$WORK/$name.err")" -eq 1 ] && grep -qE "^plot_runs.py: error: $re" "$WORK/$name.err" \
    || { cat "$WORK/$name.err"; fail "$name: expected one line matching /plot_runs.py: error: $re/"; }
  [ ! -s "$WORK/$name.out" ] || fail "$name: printed an output path"
  [ "$(ls -A "$WORK/err")" = "kept.png" ] || { ls -A "$WORK/err"; fail "$name: left files behind"; }
  cmp -s "$WORK/err/kept.png" "$WORK/plots/small.png" || fail "$name: the existing PNG was changed"
}
expect_error missing "[^ ]*/runs/nothere: no such run directory" "$A" "$WORK/runs/nothere"
expect_error nometrics "[^ ]*/runs/nometrics/metrics.jsonl: no such file" "$WORK/runs/nometrics"
expect_error empty "[^ ]*/runs/empty/metrics.jsonl: empty" "$WORK/runs/empty" "$C"
expect_error midbad "[^ ]*/runs/midbad/metrics.jsonl:3: malformed JSON" "$A" "$WORK/runs/midbad"
# A malformed last line that ends with a newline was written whole: an error, not a torn write.
expect_error lastbad "[^ ]*/runs/lastbad/metrics.jsonl:$nl: malformed JSON" "$WORK/runs/lastbad"
expect_error nostep "[^ ]*/runs/nostep/metrics.jsonl:2: row without a numeric \"step\"" "$WORK/runs/nostep"
set +e; "${PLOT[@]}" "$A" --out "$WORK/err/x.jpg" 2> "$WORK/jpg.err"; rc=$?; set -e
[ $rc -eq 2 ] && [ "$(wc -l < "$WORK/jpg.err")" -eq 1 ] && grep -q "must name a .png file" "$WORK/jpg.err" \
  || { cat "$WORK/jpg.err"; fail "--out x.jpg: rc=$rc"; }
echo "plot_runs ok"
