#!/usr/bin/env bash
# The README demo: builds, generates the reference teacher and synthetic images, runs Stage A on the
# CPU and prints the held-out cosine before/after beside the mean-teacher baseline.
# Everything goes under demo/ (inputs) and runs/ (outputs); re-running resumes/reuses them.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
"$root/scripts/build.sh" instinct-train
PY=/usr/bin/python3
if [ ! -f demo/teacher/bundle.json ]; then
  $PY scripts/make_reference_teacher.py --out demo/teacher --seed 0
fi
if [ ! -d demo/images ]; then
  $PY scripts/make_synthetic_images.py --out demo/images --n 400 --seed 1 --min-size 160 --max-size 480 --format jpg
fi
run=runs/stageA_tiny
./build/instinct-train stageA --config configs/stageA_tiny_cpu.yaml run_dir=$run "$@"
$PY - "$run/metrics.jsonl" <<'PYEOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
ev = [r for r in rows if r["split"] == "eval"]
ema = [r for r in rows if r["split"] == "eval_ema"]
tr = [r for r in rows if r["split"] == "train"]
first, last = ev[0], ev[-1]
print("\n=== Stage A demo (reference teacher, held-out images) ===")
print(f"held-out cosine: {first['cosine']:.3f} at step {first['step']} -> {last['cosine']:.3f} at step {last['step']}")
if ema:
    print(f"EMA weights:     {ema[-1]['cosine']:.3f}")
print(f"mean-teacher-vector baseline: {last['cosine_baseline']:.3f} (student is {last['cosine'] - last['cosine_baseline']:+.3f} above it)")
print(f"train throughput: {sum(r['images_per_s'] for r in tr[-5:]) / max(len(tr[-5:]), 1):.1f} images/s")
print(f"student trunk (InstinctSAM format): {sys.argv[1].rsplit('/', 1)[0]}/trunk.pt")
PYEOF
