#!/usr/bin/env bash
# Random kill -9 campaign against a trainer (the long form of tests/cli/kill_trials_*.sh):
#   scripts/kill_campaign.sh stageA|concept TRIALS [SEED]
# Each trial kills the run at a random fault point (INSTINCT_FAULT, src/common/fault.h) or from
# outside after 1-5 s, then restarts it; at the end the run must equal an uninterrupted one (weights
# and metrics rows). Needs a built tree (build/) with its fixtures (ctest -R fixtures.python).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
: "${INSTINCT_BIN_DIR:=$root/build}" "${INSTINCT_FIXTURES:=$root/build/fixtures}"
export INSTINCT_BIN_DIR INSTINCT_FIXTURES INSTINCT_SOURCE_DIR="$root" KILL_TRIALS_LENIENT=1
mode=${1:?stageA or concept} n=${2:?number of trials}
RANDOM=${3:-7}
[ -f "$INSTINCT_FIXTURES/teacher/bundle/bundle.json" ] || { echo "no fixtures in $INSTINCT_FIXTURES (run ctest -R fixtures.python)" >&2; exit 2; }
source "$root/tests/cli/common.sh"
source "$root/tests/cli/lib/kill_trials.sh"
points=(train.step archive.record atomic.commit checkpoint.saved metrics.row)
trials=()
for _ in $(seq "$n"); do
  if [ $((RANDOM % 3)) -eq 0 ]; then
    trials+=("kill:$((RANDOM % 40 / 10 + 1)).$((RANDOM % 10))")
  else
    p=${points[$((RANDOM % 5))]}
    case $p in archive.record) k=$((RANDOM % 60 + 1)) ;; atomic.commit) k=$((RANDOM % 4 + 2)) ;; *) k=$((RANDOM % 3 + 1)) ;; esac
    trials+=("$p@$k")
  fi
done
case $mode in
  stageA)
    make_images "$WORK/img" 24
    common=(teacher.bundle="$BUNDLE" data.root="$WORK/img" "${TINY[@]}" optim.max_steps=150 optim.warmup_steps=2
            cache.dir="$WORK/cache.@RUN@" log.every=1 eval.every=4 checkpoint.every=3 checkpoint.keep_last=2
            ema.enabled=true ema.decay=0.9 seed=11) ;;
  concept)
    "$PY" "$root/scripts/make_toy_world.py" --out "$WORK/world" --train 16 --val 4 --seed 5 > /dev/null
    common=(teacher.bundle="$BUNDLE" data.root="$WORK/world/train" "${TINY[@]}" init.from=random optim.max_steps=60
            optim.warmup_steps=2 log.every=1 eval.every=3 checkpoint.every=2 checkpoint.keep_last=2 ema.enabled=true
            ema.decay=0.9 seed=5) ;;
  *) echo "mode '$mode': expected stageA or concept" >&2; exit 2 ;;
esac
kill_trials "$mode" "$mode" "${trials[@]}" 2>&1 | grep -v ' Killed '
