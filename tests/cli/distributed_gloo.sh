#!/usr/bin/env bash
# Data parallelism on c10d/Gloo with real processes (the way torchrun starts them: RANK, WORLD_SIZE,
# MASTER_ADDR, MASTER_PORT):
#  - 2 ranks x batch 4 give the same weights as 1 process with batch 8 (to 1e-5), while 1 process
#    with batch 4 differs by far more (so the comparison can tell); so do 2 ranks x 2 micro-batches
#    x 2 images with the all-reduce overlapped in small buckets, and 2 ranks without overlap;
#  - only rank 0 writes the run directory;
#  - 2 ranks sharing a teacher-feature cache read each other's records from the second epoch on and
#    end where 1 process with the combined batch and its own cache ends;
#  - a run stopped with 2 ranks resumes in 1 process at the same place (same weights as an
#    uninterrupted run), and a resume with another images-per-step re-expresses the position;
#  - concept distillation runs with 2 ranks, rank 0 writing;
#  - a rank that dies makes the other fail with a one-line error naming the collective, well before
#    the default timeout, instead of hanging.
source "$(dirname "$0")/common.sh"
make_images "$WORK/img" 40
port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# Batch-independent settings: frozen BatchNorm statistics (per-rank batches would normalise
# differently), constant LR (peak = min) so runs of different length share the schedule.
common=(stageA teacher.bundle="$BUNDLE" data.root="$WORK/img" "${TINY[@]}" threads=1 data.eval_images=8 eval.every=0
        log.every=1 batchnorm_stats=false optim.base_lr=1e-3 optim.base_batch=8 optim.min_lr=1e-3
        optim.warmup_steps=0 distributed.timeout_s=20)
two_ranks() {  # two_ranks NAME args...: both ranks with the same arguments; fails if either fails
  local name=$1; shift
  local p; p=$(port)
  WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$p RANK=0 "$TRAIN" "$@" > "$WORK/$name.r0.log" 2>&1 &
  local pid0=$!
  WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$p RANK=1 "$TRAIN" "$@" > "$WORK/$name.r1.log" 2>&1 || { cat "$WORK/$name.r1.log"; fail "$name: rank 1 failed"; }
  wait $pid0 || { cat "$WORK/$name.r0.log"; fail "$name: rank 0 failed"; }
}
one() {  # one NAME args...
  local name=$1; shift
  "$TRAIN" "$@" > "$WORK/$name.log" 2>&1 || { cat "$WORK/$name.log"; fail "$name failed"; }
}
maxdiff() {  # maxdiff A.pt B.pt: largest absolute difference over the trunk tensors
  "$PY" - "$1" "$2" <<'PYEOF'
import sys, torch
a, b = (torch.load(p, weights_only=True)["trunk"] for p in sys.argv[1:3])
assert list(a) == list(b)
print(max((a[k].double() - b[k].double()).abs().max().item() for k in a))
PYEOF
}

echo "== 2 ranks x 4 images == 1 process x 8 images"
one single "${common[@]}" batch_size=8 optim.max_steps=4 run_dir="$WORK/single"
one half "${common[@]}" batch_size=4 optim.max_steps=4 run_dir="$WORK/half"
two_ranks dp "${common[@]}" batch_size=4 optim.max_steps=4 run_dir="$WORK/dp"
d_dp=$(maxdiff "$WORK/single/trunk.pt" "$WORK/dp/trunk.pt")
d_half=$(maxdiff "$WORK/single/trunk.pt" "$WORK/half/trunk.pt")
echo "max |w_single - w_2ranks| = $d_dp, max |w_single - w_half_batch| = $d_half"
"$PY" -c "import sys; a, b = map(float, sys.argv[1:]); sys.exit(0 if a <= 1e-5 and b > 100 * max(a, 1e-9) else 1)" "$d_dp" "$d_half" \
  || fail "2-rank weights differ from the combined batch by $d_dp (half batch: $d_half)"
grep -q "data parallel: 2 ranks (gloo)" "$WORK/dp.r0.log" || { cat "$WORK/dp.r0.log"; fail "rank 0 did not report the process group"; }
[ "$(grep -c '"split":"train"' "$WORK/dp/metrics.jsonl")" -eq 4 ] || { cat "$WORK/dp/metrics.jsonl"; fail "metrics.jsonl should hold rank 0's 4 train rows only"; }
! grep -q "\[info\]" "$WORK/dp.r1.log" || { cat "$WORK/dp.r1.log"; fail "rank 1 should log warnings and errors only"; }

grep -q "gradient all-reduce overlapped with backward: [0-9]* buckets" "$WORK/dp.r0.log" || { cat "$WORK/dp.r0.log"; fail "no overlapped all-reduce"; }

echo "== overlapped all-reduce in small buckets with gradient accumulation, and without overlap"
two_ranks acc "${common[@]}" batch_size=2 optim.accum_steps=2 optim.max_steps=4 distributed.bucket_mb=0.25 run_dir="$WORK/acc"
two_ranks noov "${common[@]}" batch_size=4 optim.max_steps=4 distributed.overlap=false run_dir="$WORK/noov"
d_acc=$(maxdiff "$WORK/single/trunk.pt" "$WORK/acc/trunk.pt")
d_noov=$(maxdiff "$WORK/single/trunk.pt" "$WORK/noov/trunk.pt")
echo "2 ranks x 2 micro-batches x 2 images, 0.25 MiB buckets: max diff $d_acc; overlap off: $d_noov"
"$PY" -c "import sys; sys.exit(0 if max(map(float, sys.argv[1:])) <= 1e-5 else 1)" "$d_acc" "$d_noov" \
  || fail "accumulated ($d_acc) or non-overlapped ($d_noov) 2-rank weights differ from the combined batch"
n_buckets=$(grep -o "overlapped with backward: [0-9]* buckets" "$WORK/acc.r0.log" | grep -o "[0-9]*")
[ "${n_buckets:-0}" -ge 4 ] || { cat "$WORK/acc.r0.log"; fail "0.25 MiB buckets should give several buckets, got '$n_buckets'"; }
! grep -q "overlapped with backward" "$WORK/noov.r0.log" || fail "distributed.overlap=false still overlapped"

echo "== a teacher-feature cache shared by 2 ranks"
one cached1 "${common[@]}" batch_size=8 optim.max_steps=8 cache.dir="$WORK/cache1" run_dir="$WORK/cached1"
two_ranks cached2 "${common[@]}" batch_size=4 optim.max_steps=8 cache.dir="$WORK/cache2" run_dir="$WORK/cached2"
grep -q "teacher-feature cache: 32 images served" "$WORK/cached1.log" || { grep cache "$WORK/cached1.log"; fail "1 process: epoch 2 should come from the cache"; }
# Rank 0's second epoch (4 batches x 4) comes from records both ranks stored in the first.
grep -q "teacher-feature cache: 16 images served" "$WORK/cached2.r0.log" || { grep cache "$WORK/cached2.r0.log"; fail "rank 0 did not read the records of both ranks"; }
d_cache=$(maxdiff "$WORK/cached1/trunk.pt" "$WORK/cached2/trunk.pt")
echo "shared cache, 2 ranks vs 1 process: max diff $d_cache"
"$PY" -c "import sys; sys.exit(0 if float(sys.argv[1]) <= 1e-5 else 1)" "$d_cache" || fail "cached 2-rank weights differ by $d_cache"

echo "== stopped with 2 ranks, resumed with 1 process"
two_ranks part "${common[@]}" batch_size=4 optim.max_steps=2 run_dir="$WORK/resume"
one resumed "${common[@]}" batch_size=8 optim.max_steps=4 run_dir="$WORK/resume"
grep -q "resumed from .*step_00000002.pt" "$WORK/resumed.log" || { cat "$WORK/resumed.log"; fail "no resume"; }
d_res=$(maxdiff "$WORK/single/trunk.pt" "$WORK/resume/trunk.pt")
"$PY" -c "import sys; sys.exit(0 if float(sys.argv[1]) <= 1e-5 else 1)" "$d_res" || fail "resumed run differs by $d_res"
echo "2 ranks then 1 process: max diff $d_res"
two_ranks part2 "${common[@]}" batch_size=4 optim.max_steps=2 run_dir="$WORK/resume4"
one resumed4 "${common[@]}" batch_size=4 optim.max_steps=3 run_dir="$WORK/resume4"
grep -q "resume with 4 instead of 8 images per step: continuing the epoch at batch 4" "$WORK/resumed4.log" \
  || { cat "$WORK/resumed4.log"; fail "position not re-expressed for another images-per-step"; }

echo "== concept distillation with 2 ranks"
two_ranks concept concept teacher.bundle="$BUNDLE" data.root="$WORK/img" "${TINY[@]}" threads=1 data.eval_images=8 \
  init.from=random optim.max_steps=3 eval.every=0 log.every=1 concepts.min_negatives=1 distributed.timeout_s=20 run_dir="$WORK/concept"
[ -f "$WORK/concept/trunk.pt" ] || fail "concept with 2 ranks wrote no trunk"
[ "$(grep -c '"split":"train"' "$WORK/concept/metrics.jsonl")" -eq 3 ] || { cat "$WORK/concept/metrics.jsonl"; fail "concept metrics: rank 0's 3 train rows expected"; }
grep -q "data parallel: 2 ranks (gloo)" "$WORK/concept.r0.log" || { cat "$WORK/concept.r0.log"; fail "concept rank 0 did not join"; }

echo "== a dead rank makes the other fail, not hang"
p=$(port)
start=$(date +%s)
set +e
WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$p RANK=1 "$TRAIN" "${common[@]}" batch_size=4 optim.max_steps=4 \
  teacher.bundle="$WORK/no_such_bundle" run_dir="$WORK/dead" distributed.timeout_s=8 > "$WORK/dead.r1.log" 2>&1 &
WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$p RANK=0 "$TRAIN" "${common[@]}" batch_size=4 optim.max_steps=4 \
  run_dir="$WORK/dead" distributed.timeout_s=8 > "$WORK/dead.r0.log" 2>&1
rc0=$?
wait $!; rc1=$?
set -e
took=$(( $(date +%s) - start ))
[ $rc1 -eq 2 ] || { cat "$WORK/dead.r1.log"; fail "rank 1 (bad bundle) exit code $rc1, expected 2"; }
[ $rc0 -eq 2 ] || { cat "$WORK/dead.r0.log"; fail "rank 0 exit code $rc0, expected 2"; }
grep -qE "rank 0: .*(broadcast|all-reduce|barrier).* failed \(another rank exited" "$WORK/dead.r0.log" \
  || { cat "$WORK/dead.r0.log"; fail "rank 0's error does not name the collective"; }
[ "$took" -lt 60 ] || fail "rank 0 took ${took}s to give up"
echo "rank 0 gave up after ${took}s: $(grep -o 'rank 0: .*' "$WORK/dead.r0.log" | head -1)"
echo "== a rank killed mid-run (SIGKILL after its third step): the other gives up, the run resumes"
p=$(port)
start=$(date +%s)
set +e
WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$p RANK=1 INSTINCT_FAULT=train.step@3 "$TRAIN" "${common[@]}" batch_size=4 \
  optim.max_steps=6 checkpoint.every=2 run_dir="$WORK/killed" distributed.timeout_s=8 > "$WORK/killed.r1.log" 2>&1 &
WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$p RANK=0 "$TRAIN" "${common[@]}" batch_size=4 optim.max_steps=6 \
  checkpoint.every=2 run_dir="$WORK/killed" distributed.timeout_s=8 > "$WORK/killed.r0.log" 2>&1
rc0=$?
wait $!; rc1=$?
set -e
took=$(( $(date +%s) - start ))
[ $rc1 -eq 137 ] || { cat "$WORK/killed.r1.log"; fail "rank 1 exit code $rc1, expected 137 (SIGKILL)"; }
[ $rc0 -eq 2 ] || { cat "$WORK/killed.r0.log"; fail "rank 0 exit code $rc0 after rank 1 was killed, expected 2"; }
[ "$(grep -c '\[error\]' "$WORK/killed.r0.log")" -eq 1 ] && grep -qE "\[error\] rank 0: .*(broadcast|all-reduce|barrier|stop agreement).* failed" "$WORK/killed.r0.log" \
  || { cat "$WORK/killed.r0.log"; fail "rank 0: expected one error line naming the collective"; }
[ "$took" -lt 60 ] || fail "rank 0 took ${took}s to give up after rank 1 died"
[ -f "$WORK/killed/checkpoints/step_00000002.pt" ] || { ls -R "$WORK/killed"; fail "no step-2 checkpoint from rank 0"; }
[ -z "$(find "$WORK/killed" -name '*.tmp*')" ] || fail "temporaries left in the killed run"
"$TRAIN" "${common[@]}" batch_size=8 optim.max_steps=6 checkpoint.every=2 run_dir="$WORK/killed" > "$WORK/killed.resume.log" 2>&1 \
  || { cat "$WORK/killed.resume.log"; fail "resume after a killed rank"; }
grep -qE "resumed from .*step_0000000[24].pt" "$WORK/killed.resume.log" || { cat "$WORK/killed.resume.log"; fail "did not resume"; }
echo "rank 0 gave up ${took}s after rank 1 was killed: $(grep -o 'rank 0: .*' "$WORK/killed.r0.log" | head -1); resumed in one process"
echo "distributed gloo ok"
