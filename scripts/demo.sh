#!/usr/bin/env bash
# The README demo: builds; renders the toy world (a small synthetic COCO dataset) and trains the
# reference teacher's heads on it; runs Stage A on the CPU; then evaluates teacher and Stage-A student
# (raw and EMA) with instinct-eval on the toy world's val split and prints the table.
# Inputs go under demo/, runs under runs/; re-running reuses finished steps (delete them to redo).
# Extra arguments are Stage A config overrides.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
"$root/scripts/build.sh" instinct-train instinct-eval
PY=/usr/bin/python3
t0=$SECONDS
step() { printf '\n=== %s (%ds so far) ===\n' "$1" $((SECONDS - t0)); }
if [ ! -f demo/world/annotations/instances_val.json ]; then
  step "toy world: 600 train + 100 val images"
  $PY scripts/make_toy_world.py --out demo/world --train 600 --val 100
fi
if [ ! -f demo/teacher/train_log.json ]; then
  step "reference teacher: training its heads on the toy world (about 8 minutes)"
  rm -rf demo/teacher
  $PY scripts/train_reference_teacher.py --world demo/world --out demo/teacher
fi
step "Stage A: distilling the teacher trunk into a small ViT"
run=runs/stageA_tiny
./build/instinct-train stageA --config configs/stageA_tiny_cpu.yaml run_dir=$run "$@"
$PY - "$run/metrics.jsonl" <<'PYEOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
ev = [r for r in rows if r["split"] == "eval"]
ema = [r for r in rows if r["split"] == "eval_ema"]
tr = [r for r in rows if r["split"] == "train"]
first, last = ev[0], ev[-1]
print("\n=== Stage A result (held-out images) ===")
print(f"held-out cosine: {first['cosine']:.3f} at step {first['step']} -> {last['cosine']:.3f} at step {last['step']}")
if ema:
    print(f"EMA weights:     {ema[-1]['cosine']:.3f}")
print(f"mean-teacher-vector baseline: {last['cosine_baseline']:.3f} (student is {last['cosine'] - last['cosine_baseline']:+.3f} above it)")
if tr:
    print(f"train throughput: {sum(r['images_per_s'] for r in tr[-5:]) / len(tr[-5:]):.1f} images/s")
print(f"student trunk (InstinctSAM format): {sys.argv[1].rsplit('/', 1)[0]}/trunk.pt")
PYEOF
step "instinct-eval: teacher beside the Stage-A student on the toy world's val split"
./build/instinct-eval --config configs/eval_toy_cpu.yaml \
  "students=[stageA=$run/trunk.pt, stageA_ema=$run/trunk_ema.pt]" overlays=8 progress=lines
echo "report: runs/eval_toy/report.json, overlays: runs/eval_toy/overlays/ (total $((SECONDS - t0))s)"
