#!/usr/bin/env bash
# Bad input gives a one-line error naming the problem and a non-zero exit; nothing written before is lost.
source "$(dirname "$0")/common.sh"
make_images "$WORK/img" 16
base=(teacher.bundle="$BUNDLE" data.root="$WORK/img" "${TINY[@]}" optim.max_steps=2 eval.every=0)

expect_error() {  # expect_error NAME PATTERN -- args...
  local name=$1 pattern=$2; shift 3
  set +e; "$TRAIN" "$@" > "$WORK/$name.log" 2>&1; local rc=$?; set -e
  [ $rc -ne 0 ] || { cat "$WORK/$name.log"; fail "$name: exit code 0"; }
  local line; line=$(grep -E '\[error\]' "$WORK/$name.log" | head -1)
  [ -n "$line" ] || { cat "$WORK/$name.log"; fail "$name: no error line"; }
  [ "$(grep -c -E '\[error\]' "$WORK/$name.log")" -eq 1 ] || fail "$name: more than one error line"
  echo "$line" | grep -q -E "$pattern" || fail "$name: error '$line' does not match '$pattern'"
  echo "ok $name: $line"
}

# YAML typo (override and file)
expect_error typo "unknown key 'optim.max_step'.*did you mean 'optim.max_steps'" -- stageA "${base[@]}" optim.max_step=3
printf 'optim:\n  base_lr: 1e-3\n  warmup_epoch: 1\n' > "$WORK/typo.yaml"
expect_error typo_file "typo.yaml: unknown key 'optim.warmup_epoch'.*optim.warmup_epochs" -- stageA -c "$WORK/typo.yaml" "${base[@]}"

# missing bundle file
cp -r "$BUNDLE" "$WORK/nobundle"; rm "$WORK/nobundle/trunk.pt"
expect_error missing_file "trunk.pt" -- stageA "${base[@]}" teacher.bundle="$WORK/nobundle" run_dir="$WORK/r_missing"

# trunk grid disagreeing with bundle.json
expect_error grid "broken_grid.*trunk.pt|trunk.pt.*(expected|shape)" -- stageA "${base[@]}" teacher.bundle="$INSTINCT_FIXTURES/teacher/broken_grid" teacher.verify_hashes=false run_dir="$WORK/r_grid"

# corrupt JPEG: skipped with its path logged while within max_bad_fraction ...
make_images "$WORK/img_bad" 20 --corrupt 1
"$TRAIN" stageA "${base[@]}" data.root="$WORK/img_bad" data.max_bad_fraction=0.5 run_dir="$WORK/r_bad_ok" > "$WORK/bad_ok.log" 2>&1 || { cat "$WORK/bad_ok.log"; fail "corrupt image within tolerance should not fail"; }
grep -q -E "\[warning\].*skipping image.*bad_00000.jpg" "$WORK/bad_ok.log" || { cat "$WORK/bad_ok.log"; fail "skipped image not logged with its path"; }
# ... and fatal past it
expect_error bad_fraction "max_bad_fraction|unreadable" -- stageA "${base[@]}" data.root="$WORK/img_bad" data.max_bad_fraction=0.0 optim.max_steps=8 run_dir="$WORK/r_bad"

# checkpoint of another architecture as initialisation
"$PY" - "$WORK" <<'PYEOF'
import sys, torch, collections
sys.path.insert(0, __import__("os").environ["INSTINCT_SOURCE_DIR"] + "/tests/python")
from ref_vit import StudentTrunk
m = StudentTrunk(out_channels=128, out_grid=16, width=64, img_size=224, patch=32, depth=3, heads=2)
torch.save({"trunk": dict(m.state_dict()), "backbone": "vit_custom", "model_name": "custom"}, f"{sys.argv[1]}/other_arch.pt")
m2 = StudentTrunk(out_channels=128, out_grid=16, width=48, img_size=224, patch=32, depth=2, heads=2)
torch.save(m2.state_dict(), f"{sys.argv[1]}/ordered.pt")  # an OrderedDict, as model.state_dict() gives
PYEOF
expect_error other_arch "other_arch.pt.*(shape mismatch|unexpected)" -- stageA "${base[@]}" init.from=instinct init.path="$WORK/other_arch.pt" run_dir="$WORK/r_arch"
# a raw model.state_dict() (an OrderedDict) initialises the student like a plain dict
"$TRAIN" stageA "${base[@]}" init.from=instinct init.path="$WORK/ordered.pt" run_dir="$WORK/r_od" optim.max_steps=1 \
  > "$WORK/od.log" 2>&1 || { cat "$WORK/od.log"; fail "init from an OrderedDict state dict"; }

# nothing lost: a finished run, then a resume attempt with another architecture fails and leaves
# its checkpoints, metrics and trunk untouched.
"$TRAIN" stageA "${base[@]}" run_dir="$WORK/r_keep" > "$WORK/keep.log" 2>&1 || { cat "$WORK/keep.log"; fail "baseline run"; }
before=$(cd "$WORK/r_keep" && find . -type f -exec sha256sum {} + | sort)
expect_error resume_arch "step_00000002.pt.*shape mismatch" -- stageA "${base[@]}" run_dir="$WORK/r_keep" student.width=64
after=$(cd "$WORK/r_keep" && find . -type f -exec sha256sum {} + | sort)
[ "$before" = "$after" ] || fail "a failed resume changed files in the run directory"
[ -z "$(find "$WORK/r_keep" -name '*.tmp*')" ] || fail "temporary files left behind"
echo "all error cases ok"
