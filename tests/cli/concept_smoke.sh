#!/usr/bin/env bash
# instinct-train concept end to end on a tiny toy world with the fixture teacher: metrics.jsonl has
# train rows with every loss term and eval / eval_ema rows with the agreement metrics; resuming from
# a mid-run checkpoint reproduces the uninterrupted run's per-step losses and final trunk;
# instinct-eval scores the resulting trunk; pairs without teacher targets train presence only;
# train_neck fine-tunes and saves a copy of the neck; an
# unknown vocabulary concept, a student concept bank of the wrong width and a bundle without grounding
# are one-line errors at start-up that leave no run directory behind.
source "$(dirname "$0")/common.sh"
"$PY" "$INSTINCT_SOURCE_DIR/scripts/make_toy_world.py" --out "$WORK/world" --train 20 --val 6 --seed 3 > /dev/null
common=(teacher.bundle="$BUNDLE" data.root="$WORK/world/train" "${TINY[@]}" init.from=random optim.max_steps=6
        optim.warmup_steps=2 log.every=1 eval.every=3 checkpoint.every=3 ema.enabled=true ema.decay=0.9 seed=5)
"$TRAIN" concept "${common[@]}" run_dir="$WORK/straight" > "$WORK/straight.log" 2>&1 || { cat "$WORK/straight.log"; fail "straight run"; }
# A run that stopped after its step-3 checkpoint: drop what came later, run again -> resumes at step 3.
cp -r "$WORK/straight" "$WORK/resumed"
rm "$WORK/resumed/checkpoints/step_00000006.pt" "$WORK/resumed/trunk.pt" "$WORK/resumed/trunk_ema.pt"
"$TRAIN" concept "${common[@]}" run_dir="$WORK/resumed" > "$WORK/resumed.log" 2>&1 || { cat "$WORK/resumed.log"; fail "resumed run"; }
grep -q "resumed from .*step_00000003.pt at step 3" "$WORK/resumed.log" || { cat "$WORK/resumed.log"; fail "did not resume at step 3"; }
"$PY" - "$WORK/straight" "$WORK/resumed" <<'PYEOF'
import json, math, sys, torch
def rows(d):
    return {(r["split"], r["step"]): r for r in map(json.loads, open(f"{d}/metrics.jsonl"))}
a, b = rows(sys.argv[1]), rows(sys.argv[2])
train = sorted(k for k in a if k[0] == "train")
assert len(train) == 6 and sorted(k for k in b if k[0] == "train") == train, (train, sorted(b))
terms = ["loss"] + [f"loss_{t}" for t in ("class", "presence", "l1", "giou", "mask", "dice", "memory", "align", "trunk")]
for k in train:
    for f in terms + ["lr", "pairs_per_image", "targets_per_pair"]:
        assert abs(a[k][f] - b[k][f]) <= 1e-5 * max(1.0, abs(a[k][f])), (k, f, a[k][f], b[k][f])
assert all(a[k]["loss"] > 0 and a[k]["pairs_per_image"] >= 1 for k in train)
for split in ("eval", "eval_ema"):
    ev = [r for (s, _), r in a.items() if s == split]
    assert len(ev) >= 2, split
    for r in ev:
        for m in ("concept_mask_iou", "matched_mask_iou", "matched_box_iou", "presence_agreement"):
            assert 0 <= r[m] <= 1, (m, r[m])
# trunk_cosine, the mean cosine of student and teacher trunk features on the held-out images: finite,
# in [-1, 1], moved by training, different for the student and its EMA, recomputed alike on resume.
cos = {k: r["trunk_cosine"] for k, r in a.items() if k[0] in ("eval", "eval_ema")}
assert all(type(c) in (int, float) and math.isfinite(c) and -1 <= c <= 1 for c in cos.values()), ("trunk_cosine", cos)
assert abs(cos[("eval", 6)] - cos[("eval", 3)]) > 1e-6, ("trunk_cosine did not move with training", cos)
assert abs(cos[("eval", 6)] - cos[("eval_ema", 6)]) > 1e-6, ("trunk_cosine: student and EMA agree", cos)
for k in (("eval", 6), ("eval_ema", 6)):
    assert abs(b[k]["trunk_cosine"] - cos[k]) <= 1e-5, ("resumed trunk_cosine", k, b[k]["trunk_cosine"], cos[k])
ta = torch.load(f"{sys.argv[1]}/trunk.pt", weights_only=True)["trunk"]
tb = torch.load(f"{sys.argv[2]}/trunk.pt", weights_only=True)["trunk"]
assert max((ta[k].double() - tb[k].double()).abs().max().item() for k in ta) <= 1e-5
ck = torch.load(f"{sys.argv[1]}/checkpoints/step_00000006.pt", weights_only=True)
assert ck["stage"] == "concept", ck["stage"]
w = ck["heads"]["align_proj.weight"]  # the region-text projection: identity at start, trained since
assert w.shape[0] == w.shape[1] and not torch.equal(w, torch.eye(w.shape[0])), "projection not trained/saved"
print("concept resume reproduces the uninterrupted run")
PYEOF
# The concept student evaluates like any trunk.
"$INSTINCT_BIN_DIR/instinct-eval" annotations="$WORK/world/annotations/instances_val.json" images="$WORK/world/val" \
  teacher="$BUNDLE" "students=[concept=$WORK/straight/trunk.pt]" output="$WORK/eval" progress=off > "$WORK/eval.log" 2>&1 \
  || { cat "$WORK/eval.log"; fail "instinct-eval of the concept trunk"; }
grep -q "^concept .*%" "$WORK/eval.log" || fail "no table row for the concept student"
# Pairs where the teacher keeps nothing (tau_keep above any score): presence and no-object only, no crash.
"$TRAIN" concept "${common[@]}" run_dir="$WORK/nokeep" loss.tau_keep=1.01 optim.max_steps=2 eval.every=0 \
  > "$WORK/nokeep.log" 2>&1 || { cat "$WORK/nokeep.log"; fail "run with no teacher targets"; }
"$PY" - "$WORK/nokeep" <<'PYEOF'
import json, sys
rows = [json.loads(l) for l in open(f"{sys.argv[1]}/metrics.jsonl")]
train = [r for r in rows if r["split"] == "train"]
assert len(train) == 2 and all(r["targets_per_pair"] == 0 for r in train), train
for r in train:
    for k in ("loss_l1", "loss_giou", "loss_mask", "loss_dice", "loss_align"):
        assert r[k] == 0, (k, r[k])
    assert r["loss_presence"] > 0 and r["loss_class"] > 0 and r["loss"] == r["loss"]
    assert r["grad_norm"] > 0 and "loss_grad_norm" not in r, r
    assert abs(sum(v for k, v in r.items() if k.startswith("time_")) - 1) < 1e-6 and r["ms_backward"] > 0, r
print("no-target pairs train presence and no-object only")
PYEOF
# train_neck: a copy of the detector neck is fine-tuned and saved; the bundle's own file is untouched.
"$TRAIN" concept "${common[@]}" run_dir="$WORK/neck" train_neck=true optim.max_steps=3 eval.every=0 \
  > "$WORK/neck.log" 2>&1 || { cat "$WORK/neck.log"; fail "train_neck run"; }
"$PY" - "$WORK/neck" "$BUNDLE" <<'PYEOF'
import hashlib, json, sys, torch
run, bundle = sys.argv[1], sys.argv[2]
info = json.load(open(f"{bundle}/bundle.json"))
f = info["modules"]["detector_neck"]["file"]
assert hashlib.sha256(open(f"{bundle}/{f}", "rb").read()).hexdigest() == info["modules"]["detector_neck"]["sha256"]
orig = dict(torch.jit.load(f"{bundle}/{f}").named_parameters())
tuned = dict(torch.jit.load(f"{run}/detector_neck.pt").named_parameters())
assert orig.keys() == tuned.keys()
assert any(not torch.equal(orig[k], tuned[k]) for k in orig), "neck did not change"
x = torch.randn(1, info["trunk"]["channels"], info["trunk"]["grid"], info["trunk"]["grid"])
outs = torch.jit.load(f"{run}/detector_neck.pt")(x)
assert len(outs) == 3 and outs[2].shape[-1] == info["trunk"]["grid"]
ck = torch.load(f"{run}/checkpoints/step_00000003.pt", weights_only=True)
assert all(f"detector_neck.{k}" in ck["heads"] for k in orig)
print("fine-tuned neck saved; bundle untouched")
PYEOF
# Bad input: one-line errors, exit code 2.
expect_error() {  # expect_error NAME REGEX overrides...
  local name=$1 re=$2; shift 2
  set +e
  "$TRAIN" concept "${common[@]}" run_dir="$WORK/bad_$name" "$@" > "$WORK/$name.log" 2>&1
  local rc=$?
  set -e
  [ $rc -eq 2 ] && grep -qE "$re" "$WORK/$name.log" || { cat "$WORK/$name.log"; fail "$name: rc=$rc, expected 2 and /$re/"; }
  [ ! -e "$WORK/bad_$name" ] || fail "$name: a start-up error left run_dir $WORK/bad_$name behind"
}
expect_error vocab "\[error\].*'zebra' is not in the concept bank of teacher bundle" "concepts.vocabulary=[zebra]"
"$PY" - "$BUNDLE" "$WORK/widebank" <<'PYEOF'
import hashlib, json, pathlib, sys, torch
src, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
info = json.loads((src / "bundle.json").read_text())
D, L, n = info["neck_channels"] + 8, info["prompt_length"], len(info["concepts"])
class Bank(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.table = torch.nn.Parameter(torch.randn(n, L, D))
    def forward(self, ids):
        return self.table[ids], torch.zeros_like(ids).unsqueeze(1).expand(-1, L) > 0
out.mkdir()
torch.jit.trace(Bank().eval(), torch.tensor([0, 1])).save(str(out / "concept_bank.pt"))
info["neck_channels"] = D
info["modules"] = {"concept_bank": {"file": "concept_bank.pt",
                                    "sha256": hashlib.sha256((out / "concept_bank.pt").read_bytes()).hexdigest()}}
(out / "bundle.json").write_text(json.dumps(info))
PYEOF
expect_error width "\[error\].*gives text of width $(( $("$PY" -c "import json;print(json.load(open('$BUNDLE/bundle.json'))['neck_channels'])") + 8 )) but the grounding module expects" \
  student_concepts="$WORK/widebank"
# A bundle without a grounding module.
mkdir "$WORK/nogrounding"
cp "$BUNDLE"/*.pt "$WORK/nogrounding/"
"$PY" -c "import json,sys; b=json.load(open('$BUNDLE/bundle.json')); del b['modules']['grounding']; json.dump(b, open('$WORK/nogrounding/bundle.json','w'))"
expect_error nogrounding "\[error\].*grounding" teacher.bundle="$WORK/nogrounding"
echo "concept smoke ok"
