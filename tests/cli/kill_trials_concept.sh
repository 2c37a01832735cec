#!/usr/bin/env bash
# Concept distillation survives SIGKILL anywhere: the same trials as kill_trials_stageA.sh
# (tests/cli/lib/kill_trials.sh) on a tiny toy world, ending with the uninterrupted run's weights and
# metrics rows.
source "$(dirname "$0")/common.sh"
source "$(dirname "$0")/lib/kill_trials.sh"
"$PY" "$INSTINCT_SOURCE_DIR/scripts/make_toy_world.py" --out "$WORK/world" --train 16 --val 4 --seed 5 > /dev/null
common=(teacher.bundle="$BUNDLE" data.root="$WORK/world/train" "${TINY[@]}" init.from=random optim.max_steps=8
        optim.warmup_steps=2 log.every=1 eval.every=3 checkpoint.every=2 checkpoint.keep_last=2 ema.enabled=true
        ema.decay=0.9 seed=5)
kill_trials concept concept train.step@2 archive.record@9 atomic.commit@3 checkpoint.saved@1 metrics.row@2 kill:4
