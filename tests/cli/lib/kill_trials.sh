# kill_trials NAME SUBCOMMAND TRIAL...: crash trials for one trainer (sourced after common.sh; the
# caller sets the array `common` to the trainer's arguments; "@RUN@" in them becomes "straight" or
# "killed", e.g. for a per-run cache directory). Runs SUBCOMMAND once uninterrupted into
# $WORK/NAME.straight, then into $WORK/NAME.killed once per TRIAL, each killed with SIGKILL:
#   POINT@N  INSTINCT_FAULT=POINT@N, the process kills itself at that named point (src/common/fault.h)
#   kill:S   an outside `kill -9` after S seconds
# then once more to the end. Checks that each trial died by SIGKILL (or, for kill:S, finished first),
# that each restart resumed, that no temporary file outlived a restart, that metrics.jsonl has every
# row of the uninterrupted run once and no torn line, and that the final weights (trunk.pt,
# trunk_ema.pt) equal the uninterrupted run's. Prints "NAME: K/T kill trials survived".
# Named-point trials must come before the kill:S ones: how far a run gets before an outside kill
# depends on the machine's speed, so a POINT@N after one might find fewer than N steps left.
# KILL_TRIALS_LENIENT=1 (long random campaigns): a trial whose run finishes ends the trials.
kill_trials() {
  local name=$1 sub=$2; shift 2
  local straight="$WORK/$name.straight" dir="$WORK/$name.killed" rc n=0 killed=0
  local args_straight=("${common[@]//@RUN@/straight}") args=("${common[@]//@RUN@/killed}")
  "$TRAIN" "$sub" "${args_straight[@]}" run_dir="$straight" > "$WORK/$name.straight.log" 2>&1 \
    || { cat "$WORK/$name.straight.log"; fail "$name: uninterrupted run"; }
  # The uninterrupted run's newest checkpoint is its last step. An outside kill (kill:S) on a fast
  # machine can land after the restarted run wrote it; a further trial would then have nothing to
  # train and exit 0, so the trials end there (the final checks still run).
  local last; last=$(ls "$straight"/checkpoints/step_*.pt | tail -n 1); last=${last##*/}
  if [ -z "${KILL_TRIALS_LENIENT:-}" ]; then
    local seen_kill= t
    for t in "$@"; do
      if [[ $t == kill:* ]]; then seen_kill=$t
      elif [ -n "$seen_kill" ]; then fail "$name: trial $t comes after $seen_kill; put named-point trials first"; fi
    done
  fi
  for trial in "$@"; do
    if [ -f "$dir/checkpoints/$last" ]; then
      echo "$name: the run reached its last step ($last) before trial $((n + 1)) ($trial); no more trials"; break
    fi
    n=$((n + 1))
    local log="$WORK/$name.trial$n.log" had
    had=$(ls "$dir"/checkpoints/step_*.pt 2>/dev/null || true)
    set +e
    if [[ $trial == kill:* ]]; then
      timeout -s KILL "${trial#kill:}" "$TRAIN" "$sub" "${args[@]}" run_dir="$dir" > "$log" 2>&1
    else
      INSTINCT_FAULT="$trial" "$TRAIN" "$sub" "${args[@]}" run_dir="$dir" > "$log" 2>&1
    fi
    rc=$?
    set -e
    if [ "$rc" -eq 137 ]; then
      killed=$((killed + 1))
    elif [ "$rc" -eq 0 ] && [ -n "${KILL_TRIALS_LENIENT:-}" ]; then
      echo "$name trial $n ($trial): the run finished first; no more trials"; n=$((n - 1)); break
    elif [ "$rc" -ne 0 ] || [[ $trial != kill:* ]]; then
      cat "$log"; fail "$name trial $n ($trial): exit $rc, expected 137 (SIGKILL)"
    fi
    # A restart with a checkpoint on disk resumes from it (a kill:S may strike before it says so).
    if [ -n "$had" ] && [[ $trial != kill:* ]] && ! grep -q "resumed from" "$log"; then
      cat "$log"; fail "$name trial $n ($trial): did not resume from the checkpoints on disk"
    fi
    local tmps; tmps=$(find "$dir" -name '*.tmp*' 2>/dev/null | wc -l)
    echo "$name trial $n ($trial): exit $rc, $(ls "$dir/checkpoints" 2>/dev/null | grep -c '^step_' || true) checkpoints, $tmps temporaries left by the kill"
  done
  local had; had=$(ls "$dir"/checkpoints/step_*.pt 2>/dev/null || true)
  "$TRAIN" "$sub" "${args[@]}" run_dir="$dir" > "$WORK/$name.final.log" 2>&1 \
    || { cat "$WORK/$name.final.log"; fail "$name: final restart"; }
  [ -z "$had" ] || grep -q "resumed from" "$WORK/$name.final.log" || { cat "$WORK/$name.final.log"; fail "$name: final restart did not resume"; }
  local left; left=$(find "$dir" -name '*.tmp*')
  [ -z "$left" ] || fail "$name: temporary files of killed writers outlived the restarts: $left"
  "$PY" - "$straight" "$dir" <<'PYEOF'
import json, sys, torch
def rows(d):
    lines = open(f"{d}/metrics.jsonl").read().split("\n")
    assert lines[-1] == "", f"{d}/metrics.jsonl: last line not terminated (torn)"
    out = {}
    for l in lines[:-1]:
        r = json.loads(l)  # a torn line would fail here
        k = (r["split"], r["step"])
        assert k not in out, f"{d}/metrics.jsonl: row {k} twice"
        out[k] = r
    return out
a, b = rows(sys.argv[1]), rows(sys.argv[2])
assert sorted(a) == sorted(b), ("rows differ", sorted(set(a) ^ set(b)))
timing = ("time_", "ms_", "images_per_s", "wall", "eval_s")
for k in a:
    for f, v in a[k].items():
        if isinstance(v, float) and not f.startswith(timing):
            assert abs(v - b[k][f]) <= 1e-6 * max(1.0, abs(v)), (k, f, v, b[k][f])
worst = 0.0
for name in ("trunk.pt", "trunk_ema.pt"):
    ta = torch.load(f"{sys.argv[1]}/{name}", weights_only=True)["trunk"]
    tb = torch.load(f"{sys.argv[2]}/{name}", weights_only=True)["trunk"]
    assert list(ta) == list(tb)
    worst = max([worst] + [(ta[k].double() - tb[k].double()).abs().max().item() for k in ta])
assert worst <= 1e-6, worst
print(f"{len(a)} metrics rows identical, final weights max diff {worst:.1e}")
PYEOF
  echo "$name: $killed/$n kill trials survived (each restart resumed, final weights equal)"
}
