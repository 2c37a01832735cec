#!/usr/bin/env bash
# Hostile files, each crafted on its own (tests/cli/hostile_files.py) and given to the real tool:
#  archives     pickles naming globals torch.save never writes (os.system, eval; GLOBAL and
#               STACK_GLOBAL), storages or shapes claiming more than the file holds, overflowing
#               shapes and extents, negative sizes, offsets past the end, missing storages, deep /
#               self-containing / exponentially shared pickles, zip names with `..`, absolute or
#               duplicate names, a record whose size the file cannot hold   (instinct-merge inspect)
#  safetensors  header longer than the file or absurd, a name given twice, overlapping / out-of-range offsets, byte count
#               disagreeing with dtype x shape, overflowing shape, non-object or deeply nested JSON
#  bundle.json  a module file that is a symlink out of the bundle directory (instinct-merge bundle)
#  COCO         a 10^9 x 10^9 image, a width that wraps int32, a zero width, RLE counts not summing
#               to h*w, polygon coordinates out of range or not finite, deep JSON (instinct-eval)
# Each must give exit status 1..127 (no crash signal), exactly one line on stderr naming the file
# and the problem, no output file or temporary left, and no code executed (the marker file).
# Valid controls (a torch.save file that is not a trunk, a good safetensors / COCO file) pass.
source "$(dirname "$0")/common.sh"
MERGE="$INSTINCT_BIN_DIR/instinct-merge"
EVAL="$INSTINCT_BIN_DIR/instinct-eval"
H="$WORK/h"
MARKER="$WORK/executed"
"$PY" "$INSTINCT_SOURCE_DIR/tests/cli/hostile_files.py" "$H" "$MARKER" "$BUNDLE" 2> "$WORK/craft.err" \
  || { cat "$WORK/craft.err"; fail "crafting the inputs"; }
OUT="$WORK/out"
mkdir -p "$OUT"
TABLE="$WORK/table.md"

# refuse NAME 'word|word|...' CMD...: CMD fails cleanly with one line holding every word on stderr
# (with MSG_ON=stdout: the only output, on stdout, as instinct-eval logs its errors there)
refuse() {
  local name=$1 words=$2; shift 2
  local rc=0
  "$@" > "$WORK/$name.out" 2> "$WORK/$name.err" || rc=$?
  if [ "${MSG_ON:-stderr}" = stdout ]; then
    [ ! -s "$WORK/$name.err" ] || fail "$name: unexpected stderr: $(cat "$WORK/$name.err")"
    mv "$WORK/$name.out" "$WORK/$name.err"
  fi
  local msg; msg=$(cat "$WORK/$name.err")
  [ "$rc" -ne 0 ] || fail "$name: exit 0 (stdout: $(head -c 300 "$WORK/$name.out"))"
  [ "$rc" -lt 128 ] || fail "$name: killed by signal $((rc - 128)): $msg"
  [ "$(wc -l < "$WORK/$name.err")" -eq 1 ] || fail "$name: expected one line on stderr, got: $msg"
  local ws w
  IFS='|' read -ra ws <<< "$words"
  for w in "${ws[@]}"; do
    grep -qF -- "$w" "$WORK/$name.err" || fail "$name: stderr lacks '$w': $msg"
  done
  [ -z "$(ls -A "$OUT")" ] || { ls -la "$OUT"; fail "$name: left files behind"; }
  [ ! -e "$MARKER" ] || fail "$name: the file's code was executed"
  printf '| %s | %s | %s |\n' "$name" "${msg//|/\\|}" "$rc" >> "$TABLE"
}
ok() {  # ok NAME CMD...: CMD succeeds
  local name=$1; shift
  "$@" > "$WORK/$name.out" 2> "$WORK/$name.err" || { cat "$WORK/$name.err"; fail "$name: valid input refused"; }
}

echo "== torch.save archives"
ok layout_ok "$MERGE" inspect "$H/layout_ok.pt"
grep -q "^w  Float  \[4\]  16$" "$WORK/layout_ok.out" || fail "layout_ok: $(cat "$WORK/layout_ok.out")"
inspect() { refuse "$1" "$H/$1.pt|$2" "$MERGE" inspect "$H/$1.pt"; }
inspect global_os_system "Python global 'posix.system'|never writes|nothing was executed"
inspect global_stack "Python global 'posix.system'|never writes|nothing was executed"
inspect global_eval "Python global '__builtin__.eval'|never writes|nothing was executed"
inspect storage_huge "storage '0' claims 1099511627776 x Float = 4398046511104 bytes|record holds 16 bytes"
inspect storage_negative "storage '0' claims -5 elements"
inspect storage_bytes_overflow "storage '0' claims 4611686018427387904 elements"
inspect shape_overflow "[4611686018427387904, 4]|overflows int64"
inspect size_negative "size -1|non-negative"
inspect offset_past_end "offset 100|reaches element 103 of a storage with 4 elements"
inspect extent_overflow "reaches past element 2^63"
inspect storage_two_sizes "storage '0' is declared as 4 x Float and as 1048576 x Float"
inspect storage_missing "storage record 'archive/data/7' is missing"
inspect deep_nesting "more than 1000 levels"
inspect self_containing "contains itself"
inspect shared_expansion "expands to more than"
inspect zip_dotdot "zip entry 'archive/../../etc/cron.d/x'|'..' component"
inspect zip_absolute "zip entry '/etc/cron.d/x'|absolute"
inspect zip_duplicate "zip entry 'archive/data.pkl'|occurs twice"
inspect zip_size_claim "zip entry 'archive/data/0'|claims 4294967280 bytes"
# the same refusals from a command that would write: nothing is written
refuse convert_global "global_os_system.pt|posix.system" "$MERGE" convert -i "$H/global_os_system.pt" -o "$OUT/t.pt" -f instinctsam
refuse convert_storage "storage_huge.pt|record holds 16 bytes" "$MERGE" convert -i "$H/storage_huge.pt" -o "$OUT/t.pt" -f native
# valid torch.save files that are not trunks are called so
ok not_trunk "$MERGE" inspect "$H/not_trunk.pt"
grep -q "not a trunk" "$WORK/not_trunk.out" || fail "not_trunk: $(cat "$WORK/not_trunk.out")"
ok trunk_not_tensors "$MERGE" inspect "$H/trunk_not_tensors.pt"
grep -q "not a trunk" "$WORK/trunk_not_tensors.out" || fail "trunk_not_tensors: $(cat "$WORK/trunk_not_tensors.out")"

echo "== safetensors"
ok st_ok "$MERGE" inspect "$H/st_ok.safetensors"
st() { refuse "$1" "$H/$1.safetensors|$2" "$MERGE" inspect "$H/$1.safetensors"; }
st st_header_past_end "header length 1000000 exceeds the file size"
st st_header_absurd "header length 9223372036854775815 exceeds"
st st_overlap "'a' and 'b'|overlapping"
st st_out_of_range "'w'|past the data section"
st st_byte_count "'w'|span 8 bytes, expected 16"
st st_shape_overflow "'w'|[1099511627776, 1099511627776, 1099511627776]|overflows"
st st_not_object "header is JSON array, expected an object"
st st_duplicate_name "names 'w' twice"
st st_deep_shape "'w'|shape entry array is not a non-negative integer"
refuse convert_st "st_overlap.safetensors|overlapping" "$MERGE" convert -i "$H/st_overlap.safetensors" -o "$OUT/t.pt" -f instinctsam

echo "== bundle.json"
for b in bundle_symlink_abs bundle_symlink_rel; do
  refuse "$b" "$H/$b/bundle.json|'modules.trunk.file'|resolves to $H/outside_secret.pt|outside the bundle directory" \
    "$MERGE" bundle --bundle "$H/$b" --trunk "$H/layout_ok.pt" --output "$OUT/bundle"
done

echo "== COCO annotations"
ev() {  # ev NAME WORDS: instinct-eval scoring an empty results file against annotations NAME.json
  MSG_ON=stdout refuse "$1" "$H/$1.json|$2" "$EVAL" annotations="$H/$1.json" "predictions=[p=$H/predictions.json]" \
    output="$OUT/eval" progress=off
}
ok coco_ok "$EVAL" annotations="$H/coco_ok.json" "predictions=[p=$H/predictions.json]" output="$WORK/eval_ok" progress=off
ev coco_huge "[error]|images[0] (id 7)|1000000000 x 1000000000|2^28"
ev coco_wrap "images[0] (id 8)|4294967301 x 5"
ev coco_zero "images[0] (id 9)|0 x 5"
ev coco_rle_sum "annotations[0] (id 1, image_id 1)|counts sum to 25, expected h*w = 6*8 = 48"
ev coco_polygon_big "annotations[0] (id 1, image_id 1)|coordinate 2 = 1e+300"
ev coco_polygon_inf "not valid JSON|number overflow"
ev coco_deep_size "annotations[0] (id 1, image_id 1)|RLE \"size\" is array"

echo "== all refused cleanly:"
cat "$TABLE"
