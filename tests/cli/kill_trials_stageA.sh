#!/usr/bin/env bash
# Stage A survives SIGKILL anywhere: killed at each named fault point (inside a checkpoint write,
# between a checkpoint's write and its rename, after it, mid metrics row, between steps) and at
# outside kill -9 moments, restarted after each, it ends with the uninterrupted run's weights and
# metrics rows (tests/cli/lib/kill_trials.sh). Each run fills its own teacher-feature cache, so kills
# also land while the cache is written.
source "$(dirname "$0")/common.sh"
source "$(dirname "$0")/lib/kill_trials.sh"
make_images "$WORK/img" 24
common=(teacher.bundle="$BUNDLE" data.root="$WORK/img" "${TINY[@]}" optim.max_steps=14 optim.warmup_steps=2 cache.dir="$WORK/cache.@RUN@"
        log.every=1 eval.every=4 checkpoint.every=3 checkpoint.keep_last=2 ema.enabled=true ema.decay=0.9 seed=11)
kill_trials stageA stageA train.step@2 archive.record@7 atomic.commit@3 checkpoint.saved@1 metrics.row@3 \
  train.step@3 archive.record@40 kill:1.5 kill:2.5
