#!/usr/bin/env bash
# The real SAM3 architecture through every tool: scripts/export_sam3.py exports the small SAM3 (SAM3's
# own code from $SAM3_SRC, random weights); every module matched SAM3's eager code (export_report.json)
# and no saved module names a device; instinct-eval on real photographs agrees with SAM3's own
# Sam3Processor / predict_inst (scripts/check_sam3_bundle.py: mask IoU >= 0.99, scores and boxes to
# 1e-4); instinct-train stageA and concept run a few steps on the export; instinct-merge bundle puts
# the Stage-A student in and instinct-eval runs the teacher beside that student bundle; strict
# checkpoint loading takes a complete checkpoint and refuses a missing key, a misnamed key and a
# merged (instinct-merge sam3) checkpoint, naming the key. Skips (exit 77) without SAM3_SRC.
source "$(dirname "$0")/common.sh"
if [ -z "${SAM3_SRC:-}" ] || [ ! -d "$SAM3_SRC/sam3" ]; then
  echo "SKIP: SAM3's source is needed: set SAM3_SRC to the directory holding the sam3 package (e.g. ../shared/sam3/src)"
  exit 77
fi
IMAGES="${SAM3_IMAGES:-$(dirname "$SAM3_SRC")/images}"
[ -f "$IMAGES/truck.jpg" ] || { echo "SKIP: no SAM3 photographs in $IMAGES (set SAM3_IMAGES)"; exit 77; }
EVAL="$INSTINCT_BIN_DIR/instinct-eval"
MERGE="$INSTINCT_BIN_DIR/instinct-merge"
B="$WORK/sam3_small"

"$PY" "$INSTINCT_SOURCE_DIR/scripts/export_sam3.py" --sam3-src "$SAM3_SRC" --random-init 0 --size small \
  --out "$B" > "$WORK/export.log" 2>&1 || { cat "$WORK/export.log"; fail "export_sam3.py"; }
grep -E "traced|wrote" "$WORK/export.log"
"$PY" - "$B" <<'PYEOF'
import json, sys, zipfile, re
b = sys.argv[1]
info, rep = json.load(open(f"{b}/bundle.json")), json.load(open(f"{b}/export_report.json"))
assert info["version"] == 2 and info["image_size"] == 224 and info["trunk"] == {"channels": 128, "grid": 16, "patch": 14}
want = {"trunk", "detector_neck", "interactive_neck", "grounding", "sam_head", "text_encoder", "concept_bank"}
assert set(info["modules"]) == want, info["modules"]
assert set(rep["modules"]) == want
for k, m in rep["modules"].items():
    assert m["max_rel_error"] <= 1e-5, (k, m)
    assert set(m["per_output"]) == {"1", "2"}, (k, m)
assert rep["modules"]["grounding"]["device_constants_replaced"] > 0
assert len(info["concepts"]) == 80 and info["concepts"][0] == "person"
p = info["provenance"]
assert p["sam3_commit"] and re.fullmatch(r"[0-9a-f]{40}", p["sam3_commit"]), p
assert p["random_init_seed"] == 0 and p["checkpoint_sha256"] is None and p["trace_device"] == "cpu"
assert info["sam_head"]["mask_tokens"] == 4 and info["sam_head"]["fill_hole_area"] == 256
assert info["tokenizer"]["context_length"] == 32
# No saved module pins a device (checked independently of the exporter's own check).
for k in want:
    with zipfile.ZipFile(f"{b}/{k}.pt") as z:
        for n in z.namelist():
            if "/code/" in n and n.endswith(".py"):
                code = z.read(n).decode()
                assert "torch.device(" not in code and '"cpu"' not in code and '"cuda' not in code, (k, n)
print("export report: all 7 modules match SAM3's eager code at B=1,2 (max rel error",
      max(m["max_rel_error"] for m in rep["modules"].values()), "), no pinned device")
PYEOF

# Our tools' masks on real photographs vs SAM3's own inference.
"$PY" "$INSTINCT_SOURCE_DIR/scripts/check_sam3_bundle.py" --bundle "$B" --sam3-src "$SAM3_SRC" --images "$IMAGES" \
  --eval "$EVAL" --work "$WORK/parity" --json "$WORK/parity.json" > "$WORK/parity.log" 2>&1 \
  || { cat "$WORK/parity.log"; fail "check_sam3_bundle.py: our tools disagree with SAM3's inference"; }
tail -1 "$WORK/parity.log"
"$PY" - "$WORK/parity.json" <<'PYEOF'
import json, sys
s = json.load(open(sys.argv[1]))
kinds = {(r["mask_choice"], r["prompt"]) for r in s["rows"]}
assert kinds == {("best_iou", "concept")} | {(c, p) for c in ("best_iou", "single", "single0") for p in ("box", "point")}, kinds
assert s["prompts"] == 9 * 7 and s["mismatches"] == 0, s["prompts"]
assert s["min_mask_iou"] >= 0.99 and s["max_score_err"] <= 1e-4 and s["max_box_err"] <= 1e-4
PYEOF

# Stage A, concept distillation, merge and evaluation on the real architecture.
make_images "$WORK/imgs" 12
"$TRAIN" stageA teacher.bundle="$B" data.root="$WORK/imgs" "${TINY[@]}" optim.max_steps=3 eval.every=3 \
  run_dir="$WORK/stageA" > "$WORK/stageA.log" 2>&1 || { cat "$WORK/stageA.log"; fail "stageA on the SAM3 export"; }
[ -f "$WORK/stageA/trunk.pt" ] || fail "stageA wrote no trunk.pt"
# The vocabulary mixes bank phrases and one the bank lacks (encoded by the exported text encoder).
printf 'truck\n# a file adds phrases\nred pickup truck\ndog\n' > "$WORK/concept_vocab.txt"
"$TRAIN" concept teacher.bundle="$B" data.root="$WORK/imgs" "${TINY[@]}" batch_size=2 data.eval_images=2 \
  init.from=instinct init.path="$WORK/stageA/trunk.pt" "concepts.vocabulary=[person, truck]" \
  concepts.vocabulary_file="$WORK/concept_vocab.txt" \
  optim.max_steps=2 log.every=1 eval.every=2 \
  run_dir="$WORK/concept" > "$WORK/concept.log" 2>&1 || { cat "$WORK/concept.log"; fail "concept on the SAM3 export"; }
grep -q "3 concepts from the concept bank, 1 encoded by the teacher's text encoder" "$WORK/concept.log" \
  || { cat "$WORK/concept.log"; fail "the open-vocabulary phrase was not encoded"; }
grep -q '"split":"train"' "$WORK/concept/metrics.jsonl" || fail "concept wrote no train rows"
"$MERGE" bundle --bundle "$B" --trunk "$WORK/concept/trunk.pt" --output "$WORK/student_bundle" > "$WORK/merge.log" 2>&1 \
  || { cat "$WORK/merge.log"; fail "instinct-merge bundle on the SAM3 export"; }
"$PY" - "$WORK" <<'PYEOF'
import json, sys
w = sys.argv[1]
json.dump({"images": [{"id": 1, "file_name": "truck.jpg", "width": 1800, "height": 1200}],
           "categories": [{"id": 1, "name": "truck"}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": [180, 240, 1350, 720],
                            "area": 972000.0, "segmentation": [[180, 240, 1530, 240, 1530, 960, 180, 960]]}]},
          open(f"{w}/one.json", "w"))
PYEOF
"$EVAL" annotations="$WORK/one.json" images="$IMAGES" teacher="$B" "students=[concept=$WORK/concept/trunk.pt]" \
  output="$WORK/eval" device=cpu progress=off > "$WORK/eval.log" 2>&1 || { cat "$WORK/eval.log"; fail "instinct-eval teacher + student"; }
grep -q "^concept .*%" "$WORK/eval.log" || { cat "$WORK/eval.log"; fail "no student row"; }
"$EVAL" annotations="$WORK/one.json" images="$IMAGES" teacher="$WORK/student_bundle" students=[] \
  output="$WORK/eval_sb" device=cpu progress=off > "$WORK/eval_sb.log" 2>&1 || { cat "$WORK/eval_sb.log"; fail "instinct-eval on the student bundle"; }
# The student bundle's teacher row equals the student row of the first evaluation (same trunk, same heads).
"$PY" - "$WORK/eval/report.json" "$WORK/eval_sb/report.json" <<'PYEOF'
import json, sys
a, b = (json.load(open(p))["rows"] for p in sys.argv[1:])
sa = {r["prompt"]: r for r in a if r["model"] == "concept"}
sb = {r["prompt"]: r for r in b if r["model"] == "teacher"}
assert set(sa) == set(sb) == {"concept", "box", "point"}, (set(sa), set(sb))
for k in sa:
    assert abs(sa[k]["iou"] - sb[k]["iou"]) < 1e-9 and abs(sa[k]["score"] - sb[k]["score"]) < 1e-5, (k, sa[k], sb[k])
print("student bundle = student trunk beside the teacher:", {k: round(sa[k]["iou"], 4) for k in sa})
PYEOF

# A concept bank rebuilt from C++ (instinct-merge vocab) equals SAM3's own text encoder on the phrases.
printf '# mine\nperson\ntraffic light\na red fire truck, parked\ncafé au lait\n\n12 eggs\n' > "$WORK/vocab.txt"
"$MERGE" vocab --bundle "$B" --vocab "$WORK/vocab.txt" --output "$WORK/vocab_bundle" > "$WORK/vocab.log" 2>&1 \
  || { cat "$WORK/vocab.log"; fail "instinct-merge vocab"; }
grep -q "5 phrases, 2 from the current bank, 3 encoded by the text encoder" "$WORK/vocab.log" || { cat "$WORK/vocab.log"; fail "vocab plan"; }
"$PY" - "$B" "$WORK/vocab_bundle" "$SAM3_SRC" "$INSTINCT_SOURCE_DIR/scripts" <<'PYEOF'
import json, sys, torch
old, new, src = sys.argv[1:4]
sys.path.insert(0, sys.argv[4])
import sam3_support as S
info = json.load(open(f"{new}/bundle.json"))
phrases = ["person", "traffic light", "a red fire truck, parked", "café au lait", "12 eggs"]
assert info["concepts"] == phrases, info["concepts"]
bank_new, bank_old = torch.jit.load(f"{new}/concept_bank.pt"), torch.jit.load(f"{old}/concept_bank.pt")
t_new, p_new = bank_new(torch.arange(5))
t_old, p_old = bank_old(torch.tensor([0, 9]))   # person, traffic light in coco80
assert torch.equal(t_new[:2], t_old) and torch.equal(p_new[:2], p_old), "bank rows were not kept"
model, _ = S.build_image_model(src, size="small", seed=0)
with torch.no_grad():
    out = model.backbone.forward_text(phrases, device="cpu")
ref_t, ref_p = out["language_features"].transpose(0, 1), out["language_mask"]
assert torch.equal(p_new, ref_p), "pad masks differ from SAM3's tokenizer"
err = float((t_new - ref_t).abs().max() / ref_t.abs().max())
assert err < 1e-5, err
print(f"C++ tokenizer + exported text encoder = SAM3's forward_text on 5 phrases (max rel error {err:.1e})")
PYEOF

# instinct-merge tokenize (the C++ tokenizer) gives SAM3's own token ids.
"$MERGE" tokenize --bundle "$B" "traffic light" "Don't STOP!!" "café crème" "12 eggs" "&amp; a  b" \
  "$(printf 'word %.0s' $(seq 40))" > "$WORK/tok.jsonl" || fail "instinct-merge tokenize"
"$PY" - "$WORK/tok.jsonl" "$SAM3_SRC" "$INSTINCT_SOURCE_DIR/scripts" <<'PYEOF'
import json, sys
sys.path.insert(0, sys.argv[3])
import sam3_support as S
S.import_sam3(sys.argv[2])
import os, sam3
from sam3.model.tokenizer_ve import SimpleTokenizer
tok = SimpleTokenizer(bpe_path=os.path.join(os.path.dirname(sam3.__file__), "assets", "bpe_simple_vocab_16e6.txt.gz"))
rows = [json.loads(l) for l in open(sys.argv[1])]
assert len(rows) == 6
for r in rows:
    want = tok([r["text"]], context_length=32)[0].tolist()
    assert r["ids"] == want, (r["text"], r["ids"], want)
print("instinct-merge tokenize = SAM3's tokenizer on", len(rows), "phrases")
PYEOF

# Strict checkpoint loading (fast: fails before tracing; the complete one is loaded without a trace).
"$PY" - "$WORK" "$SAM3_SRC" "$INSTINCT_SOURCE_DIR/scripts" <<'PYEOF'
import sys, torch
w, src = sys.argv[1], sys.argv[2]
sys.path.insert(0, sys.argv[3])
import sam3_support as S
model, _ = S.build_image_model(src, size="small", seed=0)
sd = model.state_dict()
p = "inst_interactive_predictor.model."
ckpt = {("tracker." + k[len(p):]) if k.startswith(p) else "detector." + k: v.clone() for k, v in sd.items()}
torch.save({"model": ckpt}, f"{w}/full.pt")
other, _ = S.build_image_model(src, size="small", seed=7)
assert any(not torch.equal(a, other.state_dict()[k]) for k, a in sd.items())
S.load_checkpoint_strict(other, f"{w}/full.pt")
assert all(torch.equal(a, other.state_dict()[k]) for k, a in sd.items()), "complete checkpoint not loaded"
miss = dict(ckpt); del miss["detector.transformer.decoder.bbox_embed.layers.0.weight"]
torch.save(miss, f"{w}/missing.pt")
bad = dict(ckpt); bad["detector.transformer.decoder.bbox_embed.layers.0.wieght"] = bad.pop("detector.transformer.decoder.bbox_embed.layers.0.weight")
torch.save(bad, f"{w}/misnamed.pt")
merged = {k: v for k, v in ckpt.items() if not k.startswith("detector.backbone.vision_backbone.trunk.")}
merged["detector.backbone.vision_backbone.trunk.model.backbone.model.cls_token"] = torch.zeros(1, 1, 768)
torch.save(merged, f"{w}/merged.pt")
print("complete checkpoint loads strictly")
PYEOF
expect_refused() {  # expect_refused CKPT PATTERN
  local out rc=0
  out=$("$PY" "$INSTINCT_SOURCE_DIR/scripts/export_sam3.py" --sam3-src "$SAM3_SRC" --checkpoint "$1" --size small \
        --out "$WORK/refused" 2>&1) || rc=$?
  [ "$rc" -eq 2 ] || { echo "$out"; fail "$1: expected exit 2, got $rc"; }
  echo "$out" | tail -1 | grep -q "$2" || { echo "$out"; fail "$1: error does not name $2"; }
  [ ! -e "$WORK/refused" ] || fail "$1: a refused export left $WORK/refused behind"
  echo "$out" | tail -1
}
expect_refused "$WORK/missing.pt" "missing key 'detector.transformer.decoder.bbox_embed.layers.0.weight'"
expect_refused "$WORK/misnamed.pt" "unexpected key 'detector.transformer.decoder.bbox_embed.layers.0.wieght'"
expect_refused "$WORK/merged.pt" "instinct-merge bundle"
echo "PASS"
