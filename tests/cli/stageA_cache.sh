#!/usr/bin/env bash
# The teacher-feature cache: the first epoch fills it, later epochs read it (the teacher does not run),
# training with it matches training without it to fp16 precision, a second run served entirely from the
# filled cache repeats the first cached run exactly (the loss uses fp16-rounded features whether they
# came from the teacher or the cache), and a cache made for other data is refused.
source "$(dirname "$0")/common.sh"
make_images "$WORK/img" 16
base=(teacher.bundle="$BUNDLE" data.root="$WORK/img" "${TINY[@]}" optim.max_steps=9 log.every=1 eval.every=0)
"$TRAIN" stageA "${base[@]}" run_dir="$WORK/plain" > "$WORK/plain.log" 2>&1 || { cat "$WORK/plain.log"; fail "plain run"; }
"$TRAIN" stageA "${base[@]}" run_dir="$WORK/cached" cache.dir="$WORK/cache" > "$WORK/cached.log" 2>&1 || { cat "$WORK/cached.log"; fail "cached run"; }
grep -q "teacher-feature cache: 24 images served" "$WORK/cached.log" || { grep cache "$WORK/cached.log"; fail "epochs 2-3 should be served from the cache (2 x 12 images)"; }
[ "$(stat -c %s "$WORK/cache/features.f16")" -eq $((12 * 128 * 16 * 16 * 2)) ] || fail "unexpected cache file size"
"$TRAIN" stageA "${base[@]}" run_dir="$WORK/cached2" cache.dir="$WORK/cache" > "$WORK/cached2.log" 2>&1 || { cat "$WORK/cached2.log"; fail "second cached run"; }
grep -q "teacher-feature cache: 36 images served" "$WORK/cached2.log" || { grep cache "$WORK/cached2.log"; fail "the second run should be served entirely from the cache"; }
"$PY" - "$WORK" <<'PYEOF'
import json, sys
def train(d):
    return {r["step"]: r for r in map(json.loads, open(f"{sys.argv[1]}/{d}/metrics.jsonl")) if r["split"] == "train"}
a, b, c = train("plain"), train("cached"), train("cached2")
assert sorted(a) == sorted(b) == sorted(c) == list(range(1, 10)), (sorted(a), sorted(b), sorted(c))
for s in range(1, 10):  # fp16-rounded teacher features
    assert abs(a[s]["loss"] - b[s]["loss"]) <= 2e-3 * abs(a[s]["loss"]), (s, a[s]["loss"], b[s]["loss"])
    assert b[s]["loss"] == c[s]["loss"], ("filled by the teacher vs read from the cache", s, b[s]["loss"], c[s]["loss"])
assert any(a[s]["loss"] != b[s]["loss"] for s in range(1, 4)), "epoch 0 should train on fp16-rounded features"
print("cache ok")
PYEOF
make_images "$WORK/img2" 17
set +e
"$TRAIN" stageA "${base[@]}" data.root="$WORK/img2" run_dir="$WORK/other" cache.dir="$WORK/cache" > "$WORK/other.log" 2>&1
rc=$?
set -e
[ $rc -ne 0 ] || fail "a cache for other data was accepted"
grep -q "\[error\].*cache.dir.*different" "$WORK/other.log" || { cat "$WORK/other.log"; fail "no clear cache mismatch error"; }
echo "cache tests ok"
