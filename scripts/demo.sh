#!/usr/bin/env bash
# The README demo: builds; renders the toy world (a small synthetic COCO dataset) and trains the
# reference teacher's heads on it; runs Stage A, then concept distillation, on the CPU; then evaluates
# the teacher, the Stage-A student and the concept student with instinct-eval on the toy world's val
# split and prints the table, then draws the training curves (runs/demo_curves.png) and names the
# browsable report (runs/eval_toy/report.html). Inputs go under demo/, runs under runs/; re-running reuses finished
# steps (delete them to redo). Extra arguments are Stage A config overrides.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
"$root/scripts/build.sh" instinct-train instinct-eval
PY=/usr/bin/python3
# Every stage is bounded by steps, not time, with fixed seeds, thread counts and CPU kernels
# (cpu_env.sh): the same table on any x86-64 machine with the same Debian LibTorch, loaded or idle.
. "$root/scripts/cpu_env.sh"
TEACHER_STEPS=1000
t0=$SECONDS
step() { printf '\n=== %s (%ds so far) ===\n' "$1" $((SECONDS - t0)); }
if [ ! -f demo/world/annotations/instances_val.json ]; then
  step "toy world: 600 train + 100 val images"
  $PY scripts/make_toy_world.py --out demo/world --train 600 --val 100 --palette category
fi
if [ ! -f demo/teacher/train_log.json ]; then
  step "reference teacher: training its heads on the toy world ($TEACHER_STEPS steps in two processes, about 11 minutes on 2 idle cores)"
  rm -rf demo/teacher
  # Its val evaluation is left to instinct-eval at the end (the same protocol, beside the students).
  $PY scripts/train_reference_teacher.py --world demo/world --out demo/teacher --steps "$TEACHER_STEPS" --threads 2 \
    --eval-images 0
fi
step "Stage A: distilling the teacher trunk into a small ViT"
run=runs/stageA_tiny
# The teacher trunk is the seeded random one whatever its heads learn: its features on the training
# images are computed in the first epoch and read back from runs/cache/ in the later ones (a run
# reading the full cache repeats the one that filled it bit for bit).
./build/instinct-train stageA --config configs/stageA_tiny_cpu.yaml run_dir=$run threads=2 cache.dir=runs/cache/stageA "$@"
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
step "concept distillation: the Stage-A student trained through the teacher's frozen neck and grounding"
crun=runs/concept_tiny
./build/instinct-train concept --config configs/concept_tiny_cpu.yaml init.path=$run/trunk.pt run_dir=$crun threads=2
$PY - "$crun/metrics.jsonl" <<'PYEOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
ev = [r for r in rows if r["split"] == "eval"]
ema = [r for r in rows if r["split"] == "eval_ema"]
print("\n=== concept distillation result (held-out images, agreement with the teacher) ===")
for name, r0, r1 in (("raw", ev[0], ev[-1]), ("EMA", ev[0], ema[-1] if ema else ev[-1])):
    print(f"{name}: concept mask IoU {r0['concept_mask_iou']:.3f} -> {r1['concept_mask_iou']:.3f}, "
          f"box IoU {r0['matched_box_iou']:.4f} -> {r1['matched_box_iou']:.4f}, "
          f"presence agreement {r0['presence_agreement']:.3f} -> {r1['presence_agreement']:.3f}, "
          f"trunk cosine {r0['trunk_cosine']:.4f} -> {r1['trunk_cosine']:.4f}")
PYEOF
step "instinct-eval: teacher beside the Stage-A and concept students on the toy world's val split"
./build/instinct-eval --config configs/eval_toy_cpu.yaml \
  "students=[stageA=$run/trunk.pt, stageA_ema=$run/trunk_ema.pt, concept=$crun/trunk.pt, concept_ema=$crun/trunk_ema.pt]" \
  overlays=8 progress=lines threads=2
$PY scripts/plot_runs.py $run $crun --out runs/demo_curves.png --title "demo: Stage A and concept distillation"
echo "report: runs/eval_toy/report.html (open in a browser; data in runs/eval_toy/report.json)"
echo "training curves: runs/demo_curves.png (total $((SECONDS - t0))s)"
