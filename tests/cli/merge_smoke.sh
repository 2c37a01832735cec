#!/usr/bin/env bash
# instinct-merge on small SAM3-named fixtures (tests/python/make_merge_fixtures.py):
#  sam3     exact output key set (input minus the teacher trunk plus the prefixed student keys,
#           wrapper and "meta" kept), kept tensors bit-exact with dtype/shape/stride (complex64, bf16,
#           fp16, int64, 0-dim, a transposed view sharing storage), inserted tensors equal to the
#           student's, weights_only loading, flat in -> flat out, byte-identical reruns, manifest
#           hashes, summary lines, dry run, --text
#  errors   exit 2 with one `instinct-merge: error:` line and nothing left in the output directory
#  bundle   trunk (and detector neck) replaced, other modules byte-identical, bundle.json hashes
#  convert  instinctsam -> native -> safetensors -> instinctsam keeps every tensor
#  inspect  format, tensor count, one line per tensor
source "$(dirname "$0")/common.sh"
MERGE="$INSTINCT_BIN_DIR/instinct-merge"
F="$WORK/fx"
CHECK="$WORK/check_merge.py"

echo "== fixtures"
"$PY" "$INSTINCT_SOURCE_DIR/tests/python/make_merge_fixtures.py" --out "$F" > /dev/null

run_ok() {  # run_ok NAME args...: runs instinct-merge, stdout in $WORK/NAME.log, fails on a non-zero exit
  local name=$1; shift
  local rc=0
  "$MERGE" "$@" > "$WORK/$name.log" 2> "$WORK/$name.err" || rc=$?
  [ $rc -eq 0 ] || { cat "$WORK/$name.log" "$WORK/$name.err"; fail "$name: exit code $rc"; }
}
no_temp() {  # no_temp DIR: no *.tmp* leftovers directly in DIR
  [ -z "$(find "$1" -maxdepth 1 -name '*.tmp*')" ] || { ls -la "$1"; fail "temporary files left in $1"; }
}
sha() { sha256sum "$1" | cut -d' ' -f1; }

# One checker for every sam3 merge (one Python start for all of them)
cat > "$CHECK" <<'EOF'
import json, re, sys, torch
# usage: check_merge.py CASE...   CASE = SAM3,STUDENT,OUTPUT,LOG[,TEXT] (paths without commas)
TRUNK = "detector.backbone.vision_backbone.trunk."
LB = "detector.backbone.language_backbone."

def bits(t):
    return t.detach().contiguous().reshape(-1).view(torch.uint8)

def same(a, b, what):
    assert a.dtype == b.dtype, (what, a.dtype, b.dtype)
    assert a.shape == b.shape, (what, a.shape, b.shape)
    assert torch.equal(bits(a), bits(b)), f"{what}: values differ"

def check(sam3_path, student_path, out_path, log_path, text_path=None):
    src = torch.load(sam3_path, weights_only=True)
    out = torch.load(out_path, weights_only=True)  # must load without weights_only=False
    assert type(out) is dict, f"output top level is {type(out).__name__}, expected a plain dict"
    wrapped = "model" in src and isinstance(src["model"], dict)
    if wrapped:
        assert set(out) == set(src), f"top-level keys {sorted(out)} != {sorted(src)}"
        for k in src:
            if k != "model":
                assert out[k] == src[k], f"top-level entry {k!r} changed: {out[k]!r}"
        sd_in, sd_out = src["model"], out["model"]
        assert type(sd_out) is dict, f"output 'model' is {type(sd_out).__name__}, expected a plain dict"
    else:
        assert "model" not in out, "flat input gave a wrapped output"
        sd_in, sd_out = src, out
    student = torch.load(student_path, weights_only=True)["trunk"]
    text = torch.load(text_path, weights_only=True) if text_path else {}

    removed = [k for k in sd_in if k.startswith(TRUNK)]
    replaced = [k for k in sd_in if text and k.startswith(LB)]
    kept = [k for k in sd_in if k not in set(removed) | set(replaced)]
    expected = set(kept) | {TRUNK + k for k in student} | {LB + k for k in text}
    missing, extra = sorted(expected - set(sd_out)), sorted(set(sd_out) - expected)
    assert not missing and not extra, f"missing {missing[:5]} unexpected {extra[:5]}"
    assert len(sd_out) == len(expected)

    for k in kept:
        a, b = sd_in[k], sd_out[k]
        same(a, b, k)
        assert a.stride() == b.stride(), (k, a.stride(), b.stride())
        assert a.storage_offset() == b.storage_offset(), (k, a.storage_offset(), b.storage_offset())
    for k, t in student.items():
        same(t, sd_out[TRUNK + k], TRUNK + k)
    for k, t in text.items():
        same(t, sd_out[LB + k], LB + k)

    # the teacher trunk is gone entirely: only the student's `...trunk.model.` keys, no complex freqs_cis
    left = [k for k in sd_out if k.startswith(TRUNK) and not k.startswith(TRUNK + "model.")]
    assert not left, f"teacher trunk keys left: {left[:5]}"
    assert not any("freqs_cis" in k for k in sd_out), "freqs_cis left in the output"
    assert not any(t.is_complex() for t in sd_out.values()), "complex tensor left in the output"
    # the fixture's special tensors survived (complex64 is only in the trunk, so it is checked removed above)
    dt = {str(t.dtype) for t in sd_out.values()}
    assert {"torch.bfloat16", "torch.float16", "torch.int64"} <= dt, dt
    assert any(t.dim() == 0 for t in sd_out.values()), "0-dim tensor lost"
    # the transposed view still shares its base's storage
    base = "detector.transformer.decoder.ref_point_head.layers.0.weight"
    if base in sd_out:
        a, v = sd_out[base], sd_out[base + "_t"]
        assert not v.is_contiguous() and v.stride() == (1, 512), v.stride()
        assert a.storage().data_ptr() == v.storage().data_ptr(), "view no longer shares storage with its base"

    # summary lines on stdout: kept / removed / inserted / replaced with tensor counts
    counts = {}
    for line in open(log_path):
        m = re.match(r"\s*(kept|removed|inserted|replaced)\s+(\d+)", line)
        if m:
            counts.setdefault(m.group(1), int(m.group(2)))
    assert set(counts) == {"kept", "removed", "inserted", "replaced"}, f"summary lines: {counts}"
    assert counts["kept"] == len(kept), (counts, len(kept))
    assert counts["removed"] == len(removed), (counts, len(removed))
    assert counts["replaced"] == len(replaced), (counts, len(replaced))
    assert counts["inserted"] in (len(student), len(student) + len(text)), (counts, len(student), len(text))

    # manifest structure (hashes are compared with sha256sum by the shell)
    man = json.load(open(out_path + ".manifest.json"))
    roles = {"sam3", "trunk"} | ({"text"} if text_path else set())
    assert roles <= set(man["inputs"]), man["inputs"].keys()
    for r in roles:
        assert set(man["inputs"][r]) >= {"path", "sha256"}, man["inputs"][r]
    assert set(man["output"]) >= {"path", "sha256"} and isinstance(man["summary"], dict), man.keys()
    print(f"ok {out_path.rsplit('/', 1)[1]}: {len(kept)} kept, {len(removed)} removed, "
          f"{len(student)} + {len(text)} inserted, {len(replaced)} replaced")

for arg in sys.argv[1:]:
    check(*arg.split(","))
EOF

check_manifest() {  # check_manifest OUTPUT role=FILE...
  local out=$1; shift
  local man="$out.manifest.json"
  [ -f "$man" ] || fail "no manifest $man"
  [ "$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["output"]["sha256"])' "$man")" = "$(sha "$out")" ] \
    || fail "$man: output sha256 differs from sha256sum"
  local rf
  for rf in "$@"; do
    [ "$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["inputs"][sys.argv[2]]["sha256"])' "$man" "${rf%%=*}")" \
      = "$(sha "${rf#*=}")" ] || fail "$man: sha256 of input ${rf%%=*} differs from sha256sum"
  done
}

echo "== sam3: wrapped OrderedDict input"
mkdir -p "$WORK/o"
run_ok merge sam3 --sam3 "$F/sam3.pt" --trunk "$F/student.pt" --output "$WORK/o/merged.pt"
cat "$WORK/merge.log"
check_manifest "$WORK/o/merged.pt" sam3="$F/sam3.pt" trunk="$F/student.pt"
no_temp "$WORK/o"

echo "== sam3: merging twice gives identical bytes"
run_ok merge2 sam3 --sam3 "$F/sam3.pt" --trunk "$F/student.pt" --output "$WORK/o/merged2.pt"
cmp "$WORK/o/merged.pt" "$WORK/o/merged2.pt" || fail "two merges of the same inputs differ"

echo "== sam3: flat input gives flat output"
run_ok flat sam3 --sam3 "$F/sam3_flat.pt" --trunk "$F/student.pt" --output "$WORK/o/flat.pt"
check_manifest "$WORK/o/flat.pt" sam3="$F/sam3_flat.pt" trunk="$F/student.pt"

echo "== sam3: --text replaces the language backbone"
run_ok text sam3 --sam3 "$F/sam3.pt" --trunk "$F/student.pt" --text "$F/text.pt" --output "$WORK/o/text.pt"
cat "$WORK/text.log"

echo "== sam3: outputs (key sets, bit-exact kept tensors, inserted tensors, summaries, manifests)"
"$PY" "$CHECK" "$F/sam3.pt,$F/student.pt,$WORK/o/merged.pt,$WORK/merge.log" \
               "$F/sam3_flat.pt,$F/student.pt,$WORK/o/flat.pt,$WORK/flat.log" \
               "$F/sam3.pt,$F/student.pt,$WORK/o/text.pt,$WORK/text.log,$F/text.pt"
check_manifest "$WORK/o/text.pt" sam3="$F/sam3.pt" trunk="$F/student.pt" text="$F/text.pt"

echo "== sam3: --dry-run prints the plan and writes nothing"
mkdir "$WORK/dry"
run_ok dry sam3 --sam3 "$F/sam3.pt" --trunk "$F/student.pt" --text "$F/text.pt" --output "$WORK/dry/out.pt" --dry-run
for w in kept removed inserted replaced; do
  grep -qE "^\s*$w\s+[0-9]+" "$WORK/dry.log" || { cat "$WORK/dry.log"; fail "dry run: no '$w' line"; }
done
[ -z "$(ls -A "$WORK/dry")" ] || { ls -la "$WORK/dry"; fail "dry run wrote files"; }
# the dry-run plan is the real run's plan
diff <(grep -E "^\s*(kept|removed|inserted|replaced)\s" "$WORK/dry.log") \
     <(grep -E "^\s*(kept|removed|inserted|replaced)\s" "$WORK/text.log") || fail "dry-run plan differs from the merge's summary"

echo "== errors: exit 2, one error line, nothing left behind"
mkdir "$WORK/err"
expect_error() {  # expect_error NAME PATTERN DIR -- args...   (DIR must stay empty)
  local name=$1 pattern=$2 dir=$3; shift 4
  set +e; "$MERGE" "$@" > "$WORK/$name.log" 2> "$WORK/$name.err"; local rc=$?; set -e
  [ $rc -eq 2 ] || { cat "$WORK/$name.log" "$WORK/$name.err"; fail "$name: exit code $rc, expected 2"; }
  [ "$(wc -l < "$WORK/$name.err")" -eq 1 ] || { cat "$WORK/$name.err"; fail "$name: expected exactly one line on stderr"; }
  grep -q '^instinct-merge: error: ' "$WORK/$name.err" || { cat "$WORK/$name.err"; fail "$name: stderr does not start with 'instinct-merge: error:'"; }
  grep -qE -- "$pattern" "$WORK/$name.err" || { cat "$WORK/$name.err"; fail "$name: error does not match '$pattern'"; }
  [ -z "$(ls -A "$dir")" ] || { ls -la "$dir"; fail "$name: left files behind in $dir"; }
  echo "ok $name: $(cat "$WORK/$name.err")"
}
E="$WORK/err/out.pt"
expect_error truncated  "truncated\.pt"        "$WORK/err" -- sam3 --sam3 "$F/truncated.pt" --trunk "$F/student.pt" --output "$E"
expect_error garbage    "garbage\.pt"          "$WORK/err" -- sam3 --sam3 "$F/garbage.pt"   --trunk "$F/student.pt" --output "$E"
expect_error badpickle  "badpickle\.pt"        "$WORK/err" -- sam3 --sam3 "$F/badpickle.pt" --trunk "$F/student.pt" --output "$E"
expect_error norecord   "norecord\.pt"         "$WORK/err" -- sam3 --sam3 "$F/norecord.pt"  --trunk "$F/student.pt" --output "$E"
expect_error no_sam3    "nosuch\.pt"           "$WORK/err" -- sam3 --sam3 "$F/nosuch.pt"    --trunk "$F/student.pt" --output "$E"
expect_error no_trunk   "nosuch\.pt"           "$WORK/err" -- sam3 --sam3 "$F/sam3.pt" --trunk "$F/nosuch.pt" --output "$E"
expect_error no_text    "nosuch\.pt"           "$WORK/err" -- sam3 --sam3 "$F/sam3.pt" --trunk "$F/student.pt" --text "$F/nosuch.pt" --output "$E"
expect_error bad_trunk  "garbage\.pt"          "$WORK/err" -- sam3 --sam3 "$F/sam3.pt" --trunk "$F/garbage.pt" --output "$E"
expect_error width      "student_wrong\.pt.*512|512.*student_wrong\.pt" "$WORK/err" -- sam3 --sam3 "$F/sam3.pt" --trunk "$F/student_wrong.pt" --output "$E"
expect_error missing    "blocks\.1\.mlp\.fc2\.bias" "$WORK/err" -- sam3 --sam3 "$F/sam3.pt" --trunk "$F/student_missing.pt" --output "$E"
expect_error unexpected "model\.backbone\.model\.head\.weight" "$WORK/err" -- sam3 --sam3 "$F/sam3.pt" --trunk "$F/student_extra.pt" --output "$E"
expect_error dup        "dup\.pt"              "$WORK/err" -- sam3 --sam3 "$F/dup.pt"       --trunk "$F/student.pt" --output "$E"
expect_error dup_plain  "dup_plain\.pt"        "$WORK/err" -- sam3 --sam3 "$F/dup_plain.pt" --trunk "$F/student.pt" --output "$E"
expect_error text_width "text_wrong\.pt"       "$WORK/err" -- sam3 --sam3 "$F/sam3.pt" --trunk "$F/student.pt" --text "$F/text_wrong.pt" --output "$E"
expect_error no_outdir  "nodir"                "$WORK/err" -- sam3 --sam3 "$F/sam3.pt" --trunk "$F/student.pt" --output "$WORK/err/nodir/out.pt"
expect_error outdir_file "text\.pt"            "$WORK/err" -- sam3 --sam3 "$F/sam3.pt" --trunk "$F/student.pt" --output "$F/text.pt/out.pt"
if [ "$(id -u)" -ne 0 ]; then
  mkdir "$WORK/ro"; chmod 555 "$WORK/ro"
  expect_error readonly "ro" "$WORK/ro" -- sam3 --sam3 "$F/sam3.pt" --trunk "$F/student.pt" --output "$WORK/ro/out.pt"
  chmod 755 "$WORK/ro"
else
  echo "(running as root: read-only output directory case skipped)"
fi
[ ! -e "$WORK/err/nodir" ] || fail "a missing output directory was created"
# a failed merge does not touch an existing output of the same name
cp "$WORK/o/merged.pt" "$WORK/o/keep.pt"; before=$(sha "$WORK/o/keep.pt")
set +e; "$MERGE" sam3 --sam3 "$F/norecord.pt" --trunk "$F/student.pt" --output "$WORK/o/keep.pt" > /dev/null 2>&1; rc=$?; set -e
[ $rc -eq 2 ] || fail "norecord over an existing output: exit code $rc"
[ "$(sha "$WORK/o/keep.pt")" = "$before" ] || fail "a failed merge changed an existing output file"
[ ! -e "$WORK/o/keep.pt.manifest.json" ] || fail "a failed merge wrote a manifest"
no_temp "$WORK/o"

echo "== --allow: keys outside detector./tracker. are an error unless their prefix is allowed"
"$PY" - "$F" <<'EOF'
import sys, torch
f = sys.argv[1]
sd = torch.load(f"{f}/sam3_flat.pt")
sd["extra.scale"] = torch.ones(3)
torch.save(sd, f"{f}/sam3_extra.pt")
EOF
expect_error allow_missing "extra\.scale" "$WORK/err" -- sam3 --sam3 "$F/sam3_extra.pt" --trunk "$F/student.pt" --output "$E"
run_ok allow sam3 --sam3 "$F/sam3_extra.pt" --trunk "$F/student.pt" --output "$WORK/o/allow.pt" --allow extra.
grep -q "waived by --allow: extra.scale" "$WORK/allow.log" || { cat "$WORK/allow.log"; fail "--allow: waived key not reported"; }
"$PY" -c "
import json, sys, torch
m = json.load(open(sys.argv[1] + '.manifest.json'))
assert m['waived'] == ['extra.scale'] and m['allow'] == ['extra.'], m
assert torch.equal(torch.load(sys.argv[1], weights_only=True)['extra.scale'], torch.ones(3))
" "$WORK/o/allow.pt" || fail "--allow: manifest or kept key wrong"

echo "== bundle: student trunk (and detector neck) in a copy of the teacher bundle"
"$PY" - "$BUNDLE" "$F" <<'EOF'
import json, sys, torch
sys.path.insert(0, __import__("os").environ["INSTINCT_SOURCE_DIR"] + "/tests/python")
from make_merge_fixtures import make_student
bundle, f = sys.argv[1:3]
info = json.load(open(f"{bundle}/bundle.json"))
# a student that fits the bundle: its heads' trunk width, its input size
torch.save(make_student(out_channels=info["trunk"]["channels"], img_size=info["image_size"], seed=4),
           f"{f}/student_bundle.pt")
neck = torch.jit.load(f"{bundle}/detector_neck.pt")
with torch.no_grad():
    next(iter(neck.parameters())).mul_(1.5)  # a "fine-tuned" neck: same contract, other bytes
torch.jit.save(neck, f"{f}/neck.pt")
EOF
cmp -s "$F/neck.pt" "$BUNDLE/detector_neck.pt" && fail "fixture neck equals the bundle's"
run_ok bundle bundle --bundle "$BUNDLE" --trunk "$F/student_bundle.pt" --output "$WORK/sb"
run_ok bundle_neck bundle --bundle "$BUNDLE" --trunk "$F/student_bundle.pt" --neck "$F/neck.pt" --output "$WORK/sbn"
# each case: OUT,STUDENT,NECK (NECK "-": the bundle's own detector neck is kept)
"$PY" - "$BUNDLE" "$WORK/sb,$F/student_bundle.pt,-" "$WORK/sbn,$F/student_bundle.pt,$F/neck.pt" <<'EOF'
import hashlib, json, pathlib, sys, torch
src = pathlib.Path(sys.argv[1])
sha = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()


def check(out, student, neck):
    out, student = pathlib.Path(out), pathlib.Path(student)
    a, b = json.load(open(src / "bundle.json")), json.load(open(out / "bundle.json"))
    changed = [k for k in a if k not in ("modules", "name") and b.get(k) != a[k]]  # the tool may rename and annotate
    assert not changed, f"bundle.json fields changed: {changed}"
    assert set(a["modules"]) == set(b["modules"]), (a["modules"].keys(), b["modules"].keys())
    for key, m in b["modules"].items():
        p = out / m["file"]
        assert p.is_file(), f"{key}: {p} missing"
        assert sha(p) == m["sha256"], f"{key}: sha256 in bundle.json does not match {p}"
        if key == "trunk":
            assert m.get("format") == "instinct-trunk", f"trunk format: {m.get('format')!r}"
            got = torch.load(p, weights_only=True)
            got = got["trunk"] if "trunk" in got else got
            want = torch.load(student, weights_only=True)["trunk"]
            assert set(got) == set(want), (sorted(set(got) ^ set(want))[:5])
            for k in want:
                assert got[k].dtype == want[k].dtype and torch.equal(got[k], want[k]), k
        elif key == "detector_neck" and neck != "-":
            assert p.read_bytes() == pathlib.Path(neck).read_bytes(), "detector_neck.pt is not the given neck"
        else:
            assert p.read_bytes() == (src / a["modules"][key]["file"]).read_bytes(), f"{key}: not byte-identical"
            assert m["sha256"] == a["modules"][key]["sha256"], key
    print(f"ok bundle {out.name}: {len(b['modules'])} modules")


for arg in sys.argv[2:]:
    check(*arg.split(","))
EOF
# the student bundle is a bundle our tools run: a Stage-A step with it as the teacher
make_images "$WORK/img" 12
"$TRAIN" stageA teacher.bundle="$WORK/sbn" data.root="$WORK/img" "${TINY[@]}" optim.max_steps=1 eval.every=0 \
  run_dir="$WORK/r_sb" > "$WORK/r_sb.log" 2>&1 || { cat "$WORK/r_sb.log"; fail "instinct-train with the student bundle"; }
grep -q "student trunk written" "$WORK/r_sb.log" || { cat "$WORK/r_sb.log"; fail "stageA with the student bundle did not finish"; }
run_ok bundle_dry bundle --bundle "$BUNDLE" --trunk "$F/student_bundle.pt" --output "$WORK/sb_dry" --dry-run
[ ! -e "$WORK/sb_dry" ] || fail "bundle --dry-run wrote $WORK/sb_dry"
mkdir "$WORK/berr"
expect_error bundle_width "student\.pt" "$WORK/berr" -- bundle --bundle "$BUNDLE" --trunk "$F/student.pt" --output "$WORK/berr/b"
expect_error bundle_trunk "student_missing\.pt|fc2\.bias" "$WORK/berr" -- bundle --bundle "$BUNDLE" --trunk "$F/student_missing.pt" --output "$WORK/berr/b"
expect_error bundle_none  "nosuch" "$WORK/berr" -- bundle --bundle "$WORK/nosuch" --trunk "$F/student_bundle.pt" --output "$WORK/berr/b"
no_temp "$WORK"

echo "== convert: instinctsam -> native -> safetensors -> instinctsam"
mkdir "$WORK/cv"
run_ok cv1 convert --input "$F/student.pt" --output "$WORK/cv/native.pt" --format native
run_ok cv2 convert --input "$WORK/cv/native.pt" --output "$WORK/cv/trunk.safetensors" --format safetensors
run_ok cv3 convert --input "$WORK/cv/trunk.safetensors" --output "$WORK/cv/back.pt" --format instinctsam
"$PY" - "$F/student.pt" "$WORK/cv" <<'EOF'
import json, struct, sys, torch
want = torch.load(sys.argv[1], weights_only=True)["trunk"]
d = sys.argv[2]

def same(got, what):
    assert set(got) == set(want), (what, sorted(set(got) ^ set(want))[:5])
    for k, t in want.items():
        g = got[k]
        assert g.dtype == t.dtype and g.shape == t.shape, (what, k, g.dtype, t.dtype, g.shape, t.shape)
        assert torch.equal(g, t), (what, k)

native = torch.load(f"{d}/native.pt", weights_only=True)
assert type(native) is dict and "trunk" in native, f"native: {type(native).__name__} {list(native)[:5]}"
same(native["trunk"], "native")

raw = open(f"{d}/trunk.safetensors", "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
header = json.loads(raw[8:8 + n])
header.pop("__metadata__", None)
dtypes = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64,
          "I64": torch.int64, "I32": torch.int32, "U8": torch.uint8, "BOOL": torch.bool}
body = bytearray(raw[8 + n:])
st = {}
for k, e in header.items():
    b, end = e["data_offsets"]
    t = torch.frombuffer(body, dtype=torch.uint8, count=end - b, offset=b) if end > b else torch.empty(0, dtype=torch.uint8)
    st[k] = t.view(dtypes[e["dtype"]]).reshape(e["shape"]).clone()
same(st, "safetensors")

back = torch.load(f"{d}/back.pt", weights_only=True)
assert type(back) is dict and set(back) >= {"trunk", "backbone", "model_name"}, list(back)
same(back["trunk"], "instinctsam")
open(f"{d}/count", "w").write(str(len(want)))
print(f"ok convert: {len(want)} tensors round-trip exactly")
EOF

echo "== inspect"
run_ok inspect inspect "$F/sam3.pt"
head -3 "$WORK/inspect.log"
"$PY" - "$F/sam3.pt" "$WORK/inspect.log" <<'EOF'
import re, sys, torch
sd = torch.load(sys.argv[1], weights_only=True)["model"]
lines = open(sys.argv[2]).read().splitlines()
text = "\n".join(lines)
assert re.search(rf"\b{len(sd)}\b", text), f"tensor count {len(sd)} not printed"
assert re.search(r"complex64|ComplexFloat", text), "complex dtype not printed"
for k, t in sd.items():
    hits = [l for l in lines if re.search(rf"(^|[\s.]){re.escape(k)}(\s|$)", l)]
    assert len(hits) == 1, f"{k}: {len(hits)} lines"
    nums = re.findall(r"\d+", hits[0].replace(k, ""))
    for s in t.shape:
        assert str(s) in nums, (k, tuple(t.shape), hits[0])
    nbytes = t.numel() * t.element_size()
    assert str(nbytes) in nums, (k, nbytes, hits[0])
print(f"ok inspect: {len(sd)} tensor lines")
EOF
run_ok inspect_st inspect "$WORK/cv/trunk.safetensors"
# the header line names the format after the path (the path itself says "safetensors" too) and counts
# the tensors; the tensor lines are those of the same trunk read from the InstinctSAM file
grep -qxE "$(sed 's/[.]/[.]/g' <<< "$WORK/cv/trunk.safetensors"): safetensors, $(cat "$WORK/cv/count") tensors, .*" \
  <(head -1 "$WORK/inspect_st.log") || { head -3 "$WORK/inspect_st.log"; fail "inspect: no 'safetensors, $(cat "$WORK/cv/count") tensors' header"; }
run_ok inspect_back inspect "$WORK/cv/back.pt"
diff <(tail -n +2 "$WORK/inspect_st.log" | sort) <(tail -n +2 "$WORK/inspect_back.log" | sed 's/^trunk[.]//' | sort) \
  || fail "inspect: the safetensors tensor lines differ from the InstinctSAM file's"
expect_error inspect_garbage "garbage\.pt" "$WORK/err" -- inspect "$F/garbage.pt"
echo "merge smoke ok"
