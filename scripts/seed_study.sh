#!/usr/bin/env bash
# The distillation result on the proxy teacher (docs/results.md): for each seed, Stage A then concept
# distillation from that Stage A student (the demo's configs, seed=<s>), then one instinct-eval of
# the teacher beside every student, and a table of each student as % of the teacher (mean and spread
# over the seeds). Needs the demo's inputs (run scripts/demo.sh once). Runs go to runs/seeds/.
#
#   scripts/seed_study.sh [SEED ...]     (default: 0 1 2)
#
# DEMO_DIR (default demo) holds the toy world and teacher; OUT_DIR (default runs/seeds) the runs.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
. "$root/scripts/cpu_env.sh"  # the demo's CPU kernels, so seed 0 reproduces the demo
D="${DEMO_DIR:-demo}"
O="${OUT_DIR:-runs/seeds}"
[ -f "$D/teacher/bundle.json" ] || { echo "seed_study.sh: error: $D/teacher missing; run scripts/demo.sh first" >&2; exit 2; }
inputs=(teacher.bundle="$D/teacher" data.root="$D/world/train")
seeds=("$@")
[ ${#seeds[@]} -gt 0 ] || seeds=(0 1 2)
students=()
for s in "${seeds[@]}"; do
  a=$O/stageA_s$s c=$O/concept_s$s
  ./build/instinct-train stageA --config configs/stageA_tiny_cpu.yaml "${inputs[@]}" run_dir=$a seed=$s threads=2 \
    cache.dir="$O/cache/stageA" log.progress=lines
  ./build/instinct-train concept --config configs/concept_tiny_cpu.yaml "${inputs[@]}" init.path=$a/trunk.pt \
    run_dir=$c seed=$s threads=2 log.progress=lines
  students+=("stageA_s$s=$a/trunk.pt" "concept_s$s=$c/trunk.pt")
done
list=$(IFS=,; echo "${students[*]}")
./build/instinct-eval --config configs/eval_toy_cpu.yaml "students=[$list]" output=$O/eval threads=2 progress=lines \
  teacher="$D/teacher" annotations="$D/world/annotations/instances_val.json" images="$D/world/val"
/usr/bin/python3 - $O/eval/report.json <<'PYEOF'
import json, statistics, sys
r = json.load(open(sys.argv[1]))
s = r["summary"]
def val(m, k):
    return s[m]["cgf1"]["cgf1"] if k == "cgf1" else s[m][k]["mean"]
keys = ["concept", "box", "point", "cgf1"]
print("\n=== students as % of the teacher, mean ± sd over seeds (absolute mean in brackets) ===")
print(f"{'':8s}" + "".join(f"{k:>26s}" for k in keys))
print(f"{'teacher':8s}" + "".join(f"{'':>17s}({val('teacher', k):.3f})" for k in keys))
for kind in ("stageA", "concept"):
    ms = [m for m in r["models"] if m.startswith(kind + "_s")]
    cells = []
    for k in keys:
        t = val("teacher", k)
        pct = [100 * val(m, k) / t if t else float("nan") for m in ms]
        ab = [val(m, k) for m in ms]
        sd = statistics.stdev(pct) if len(pct) > 1 else 0.0
        cells.append(f"{statistics.mean(pct):6.1f}% ± {sd:4.1f} ({statistics.mean(ab):.3f})")
    print(f"{kind:8s}" + "".join(f"{c:>26s}" for c in cells))
PYEOF
