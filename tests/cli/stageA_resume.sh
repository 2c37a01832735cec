#!/usr/bin/env bash
# Resume is exact: a run stopped mid-run by SIGINT (checkpoint + exit 130), resumed, stopped again by
# SIGTERM (exit 143) and resumed again produces the same per-step training losses as an uninterrupted
# run (CPU, to 1e-6) and the same final trunk. Each signal is sent while the run is held (SIGSTOP) at
# a known step, so it lands mid-run; each resume starts from the checkpoint written at signal time.
source "$(dirname "$0")/common.sh"
make_images "$WORK/img" 44
common=(teacher.bundle="$BUNDLE" data.root="$WORK/img" "${TINY[@]}" optim.max_steps=16 optim.warmup_steps=3
        log.every=1 eval.every=5 checkpoint.every=5 ema.enabled=true ema.decay=0.9 seed=7)
"$TRAIN" stageA "${common[@]}" run_dir="$WORK/straight" > "$WORK/straight.log" 2>&1 || { cat "$WORK/straight.log"; fail "straight run"; }

train_rows() { grep -c '"split":"train"' "$WORK/resumed/metrics.jsonl" 2>/dev/null || true; }
# interrupt NAME SIGNAL RC AT: runs into $WORK/resumed, holds it once AT train rows are logged, sends
# SIGNAL, expects exit RC, a checkpoint at the step the signal arrived and the steps since resumed.
interrupt() {
  local name=$1 sig=$2 want_rc=$3 at=$4 n=0 rc
  "$TRAIN" stageA "${common[@]}" run_dir="$WORK/resumed" > "$WORK/$name.log" 2>&1 &
  local pid=$!
  for _ in $(seq 1200); do
    n=$(train_rows); [ "${n:-0}" -ge "$at" ] && break
    kill -0 $pid 2>/dev/null || break
    sleep 0.02
  done
  kill -STOP $pid 2>/dev/null || true
  n=$(train_rows)
  kill -"$sig" $pid 2>/dev/null || true
  kill -CONT $pid 2>/dev/null || true
  set +e; wait $pid; rc=$?; set -e
  tail -2 "$WORK/$name.log"
  [ "$rc" -eq "$want_rc" ] || { cat "$WORK/$name.log"; fail "$name: SIG$sig after $n train rows: exit $rc, expected $want_rc"; }
  local signo; signo=$(kill -l "$sig")
  local line; line=$(grep -E "signal $signo received: writing a checkpoint at step [0-9]+ and stopping" "$WORK/$name.log") \
    || { cat "$WORK/$name.log"; fail "$name: no checkpoint-on-signal message for signal $signo"; }
  stop_step=$(sed -E 's/.* at step ([0-9]+) and stopping.*/\1/' <<< "$line")
  # Held at n logged steps: the signal is seen at the end of step n or n+1, before the last step.
  [ "$stop_step" -ge "$n" ] && [ "$stop_step" -le $((n + 1)) ] && [ "$stop_step" -lt 16 ] \
    || fail "$name: signal after $n train rows stopped at step $stop_step"
  stop_ckpt="$WORK/resumed/checkpoints/$(printf 'step_%08d.pt' "$stop_step")"
  [ -f "$stop_ckpt" ] || { ls "$WORK/resumed/checkpoints"; fail "$name: no checkpoint $stop_ckpt"; }
  [ ! -e "$WORK/resumed/trunk.pt" ] || fail "$name: a stopped run wrote the final trunk"
}
expect_resume() {  # expect_resume LOG CHECKPOINT STEP: the run resumed from CHECKPOINT at STEP
  grep -qF "resumed from $2 at step $3 " "$WORK/$1.log" || { cat "$WORK/$1.log"; fail "$1: did not resume from $2 at step $3"; }
}
interrupt first INT 130 6     # stops at step 6 or 7: after the step-5 checkpoint, so a resume from 5 would show
int_step=$stop_step int_ckpt=$stop_ckpt
interrupt second TERM 143 11  # resumes from the SIGINT checkpoint, stops again at step 11 or 12
expect_resume second "$int_ckpt" "$int_step"
"$TRAIN" stageA "${common[@]}" run_dir="$WORK/resumed" > "$WORK/third.log" 2>&1 || { cat "$WORK/third.log"; fail "third run"; }
expect_resume third "$stop_ckpt" "$stop_step"

"$PY" - "$WORK/straight" "$WORK/resumed" <<'PYEOF'
import json, sys, torch
def rows(d):
    out = {}
    for l in open(f"{d}/metrics.jsonl"):
        r = json.loads(l)
        out[(r["split"], r["step"])] = r
    return out
a, b = rows(sys.argv[1]), rows(sys.argv[2])
train = sorted(k for k in a if k[0] == "train")
assert len(train) == 16, train
assert sorted(k for k in b if k[0] == "train") == train, "resumed log has missing or duplicate steps"
for k in train:
    for f in ("loss", "loss_cos", "loss_mse", "lr", "grad_norm"):
        assert abs(a[k][f] - b[k][f]) <= 1e-6 * max(1.0, abs(a[k][f])), (k, f, a[k][f], b[k][f])
    # Step-time split: the phases of a step, shares summing to 1, milliseconds per batch.
    phases = ("data", "teacher", "student_forward", "backward", "optimizer")
    assert abs(sum(a[k]["time_" + p] for p in phases) - 1) < 1e-6, a[k]
    assert all(a[k]["ms_" + p] > 0 for p in ("teacher", "student_forward", "backward")), a[k]
    assert a[k]["grad_norm"] > 0, a[k]
ta = torch.load(f"{sys.argv[1]}/trunk.pt", weights_only=True)["trunk"]
tb = torch.load(f"{sys.argv[2]}/trunk.pt", weights_only=True)["trunk"]
diff = max((ta[k].double() - tb[k].double()).abs().max().item() for k in ta)
assert diff <= 1e-6, diff
ea = torch.load(f"{sys.argv[1]}/trunk_ema.pt", weights_only=True)["trunk"]
eb = torch.load(f"{sys.argv[2]}/trunk_ema.pt", weights_only=True)["trunk"]
assert max((ea[k].double() - eb[k].double()).abs().max().item() for k in ea) <= 1e-6
ck = torch.load(f"{sys.argv[2]}/checkpoints/step_00000016.pt", weights_only=True)
assert ck["step"] == 16 and ck["stage"] == "stageA" and "exp_avg" in ck["optimizer"], ck.keys()
assert ck["checksum"].startswith("sha256:") and len(ck["checksum"]) == 71, ck["checksum"]
print(f"resume ok: 16 steps identical, final trunk max diff {diff:.1e}")
PYEOF
echo "stopped by SIGINT at step $int_step and SIGTERM at step $stop_step, resumed each time"

# A newest checkpoint cut short (a node died mid-copy) is named and skipped: the run resumes from the
# one before it; a temporary file left by a killed writer (dead pid) is removed at start-up.
ck_dir="$WORK/resumed/checkpoints"
newest=$(ls "$ck_dir"/step_*.pt | sort | tail -1); previous=$(ls "$ck_dir"/step_*.pt | sort | tail -2 | head -1)
head -c $(( $(stat -c %s "$newest") / 2 )) "$newest" > "$WORK/cut.pt" && mv "$WORK/cut.pt" "$newest"
sh -c 'exit 0' & dead=$!; wait $dead
echo partial > "$ck_dir/step_00000017.pt.tmp.$dead"
prev_step=$((10#$(basename "$previous" .pt | sed 's/step_//')))
"$TRAIN" stageA "${common[@]}" optim.max_steps=17 run_dir="$WORK/resumed" > "$WORK/damaged.log" 2>&1 \
  || { cat "$WORK/damaged.log"; fail "resume past a truncated newest checkpoint failed"; }
grep -qE "\[warning\] cannot resume from $newest: .*(truncated|corrupt)" "$WORK/damaged.log" \
  || { cat "$WORK/damaged.log"; fail "the truncated checkpoint was not named"; }
expect_resume damaged "$previous" "$prev_step"
[ ! -e "$ck_dir/step_00000017.pt.tmp.$dead" ] || fail "a dead writer's temporary file was left behind"
echo "truncated $(basename "$newest") skipped, resumed from $(basename "$previous")"
