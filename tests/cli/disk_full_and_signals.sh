#!/usr/bin/env bash
# A full disk and a stop request never leave partial output behind:
#  - Stage A whose disk fills while writing a checkpoint (a small tmpfs when this user may mount one,
#    else `ulimit -f` below a checkpoint's size, with SIGXFSZ ignored so writes fail with EFBIG) exits
#    2 with one error line naming the file and the cause; the previous checkpoint is intact and the
#    run resumes from it once there is room; no temporary file is left;
#  - instinct-eval stopped by SIGTERM or SIGINT mid-run exits 128+signal, writes no report.json and
#    removes the overlays it wrote; on a full disk it exits 2 with no report.json and no temporary.
source "$(dirname "$0")/common.sh"
EVAL="$INSTINCT_BIN_DIR/instinct-eval"
make_images "$WORK/img" 16
common=(teacher.bundle="$BUNDLE" data.root="$WORK/img" "${TINY[@]}" log.every=1 eval.every=0 checkpoint.every=2
        checkpoint.keep_last=2 seed=3)
# One checkpoint's size, from a probe run.
"$TRAIN" stageA "${common[@]}" optim.max_steps=2 run_dir="$WORK/probe" > "$WORK/probe.log" 2>&1 || { cat "$WORK/probe.log"; fail "probe"; }
ck=$(stat -c %s "$WORK/probe/checkpoints/step_00000002.pt")

small="$WORK/small"; mkdir -p "$small"
limited=()   # how the filling run is started
if [ "$(id -u)" -eq 0 ] && mount -t tmpfs -o size=$(( ck * 5 / 2 + 65536 )) tmpfs "$small" 2>/dev/null; then
  trap 'umount "$small" 2>/dev/null || true; rm -rf "$WORK"' EXIT
  how="tmpfs of $(( (ck * 5 / 2 + 65536) / 1024 )) KiB"
  # room for config, metrics and two checkpoints; the third (written before the oldest is pruned) fills it
  run=("$TRAIN" stageA "${common[@]}" optim.max_steps=8 run_dir="$small/run")
  want="No space left on device"
else
  how="ulimit -f $(( ck / 2048 )) KiB"
  "$TRAIN" stageA "${common[@]}" optim.max_steps=4 run_dir="$small/run" > "$WORK/first.log" 2>&1 || { cat "$WORK/first.log"; fail "first"; }
  run=(bash -c 'trap "" XFSZ; ulimit -f $1; shift; exec "$@"' _ $(( ck / 2048 )) "$TRAIN" stageA "${common[@]}" optim.max_steps=8 run_dir="$small/run")
  want="File too large"
fi
set +e; "${run[@]}" > "$WORK/full.log" 2>&1; rc=$?; set -e
[ "$rc" -eq 2 ] || { cat "$WORK/full.log"; fail "full disk ($how): exit $rc, expected 2"; }
errs=$(grep -c "\[error\]" "$WORK/full.log" || true)
line=$(grep "\[error\]" "$WORK/full.log" || true)
[ "$errs" -eq 1 ] && grep -q "step_00000006.pt" <<< "$line" && grep -q "$want" <<< "$line" \
  || { cat "$WORK/full.log"; fail "full disk ($how): expected one error naming step_00000006.pt and '$want'"; }
[ -z "$(find "$small/run" -name '*.tmp*')" ] || fail "full disk: temporary files left: $(find "$small/run" -name '*.tmp*')"
[ ! -e "$small/run/checkpoints/step_00000006.pt" ] || fail "full disk: a partial step_00000006.pt was left"
echo "full disk ($how): $line"
# Room again (the run directory moved to a normal disk): resumes from the intact step-4 checkpoint.
cp -r "$small/run" "$WORK/moved"
"$TRAIN" stageA "${common[@]}" optim.max_steps=8 run_dir="$WORK/moved" > "$WORK/moved.log" 2>&1 || { cat "$WORK/moved.log"; fail "resume after full disk"; }
grep -q "resumed from .*step_00000004.pt at step 4" "$WORK/moved.log" || { cat "$WORK/moved.log"; fail "did not resume from step 4"; }
[ -f "$WORK/moved/trunk.pt" ] || fail "resumed run wrote no trunk"
echo "resumed from step 4 after the disk was freed"

# instinct-eval: SIGTERM / SIGINT mid-run, then a full disk.
"$PY" "$INSTINCT_SOURCE_DIR/scripts/make_toy_world.py" --out "$WORK/world" --train 2 --val 40 --seed 5 > /dev/null
ev=(annotations="$WORK/world/annotations/instances_val.json" images="$WORK/world/val" teacher="$BUNDLE"
    protocol.n_images=0 progress=lines overlays=40 batch_size=1 workers=1)
for sig in TERM INT; do
  out="$WORK/eval_$sig"
  "$EVAL" "${ev[@]}" output="$out" > "$WORK/eval_$sig.log" 2>&1 &
  pid=$!
  for _ in $(seq 1500); do  # until a few overlays exist, i.e. mid-run
    [ "$(ls "$out/overlays" 2>/dev/null | grep -c png)" -ge 3 ] && break
    kill -0 $pid 2>/dev/null || break
    sleep 0.02
  done
  kill -"$sig" $pid 2>/dev/null || true
  set +e; wait $pid; rc=$?; set -e
  signo=$(kill -l "$sig")
  [ "$rc" -eq $((128 + signo)) ] || { cat "$WORK/eval_$sig.log"; fail "eval SIG$sig: exit $rc, expected $((128 + signo))"; }
  grep -q "signal $signo received after [0-9]*/40 images: stopping without a report" "$WORK/eval_$sig.log" \
    || { cat "$WORK/eval_$sig.log"; fail "eval SIG$sig: no stop message"; }
  [ ! -e "$out/report.json" ] || fail "eval SIG$sig: a report was written"
  [ -z "$(find "$out" -type f 2>/dev/null)" ] || fail "eval SIG$sig: files left: $(find "$out" -type f)"
  echo "eval SIG$sig: $(grep -o 'signal .*' "$WORK/eval_$sig.log" | head -1)"
done
ulimit_eval() { bash -c 'trap "" XFSZ; ulimit -f 8; shift; exec "$@"' _ "$@"; }
set +e; ulimit_eval x "$EVAL" "${ev[@]}" overlays=0 output="$WORK/eval_full" > "$WORK/eval_full.log" 2>&1; rc=$?; set -e
[ "$rc" -eq 2 ] || { cat "$WORK/eval_full.log"; fail "eval on a full disk: exit $rc, expected 2"; }
grep "\[error\]" "$WORK/eval_full.log" | grep -q "report.json" || { cat "$WORK/eval_full.log"; fail "eval full disk: error does not name report.json"; }
[ -z "$(find "$WORK/eval_full" -type f 2>/dev/null)" ] || fail "eval full disk: files left: $(find "$WORK/eval_full" -type f)"
echo "eval on a full disk: $(grep '\[error\]' "$WORK/eval_full.log")"
