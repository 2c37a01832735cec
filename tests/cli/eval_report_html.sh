#!/usr/bin/env bash
# instinct-eval's report.html, in model mode and in results-file mode, on a toy world with overlays:
# eval_report_html.py parses it (html.parser) and checks the summary table against report.json, one
# histogram per (prompt, model) with the rows' per-bin counts, every overlay PNG embedded as a data:
# URI with the file's bytes, nothing external, model names escaped. An interrupted run leaves neither
# report.json nor report.html. With chromium installed, the page is rendered headless: the DOM holds
# the table and the images, the screenshot is not blank.
source "$(dirname "$0")/common.sh"
EVAL="$INSTINCT_BIN_DIR/instinct-eval"
CHECK="$INSTINCT_SOURCE_DIR/tests/cli/eval_report_html.py"
"$PY" "$INSTINCT_SOURCE_DIR/scripts/make_toy_world.py" --out "$WORK/world" --train 3 --val 12 --seed 5 > /dev/null
"$TRAIN" stageA teacher.bundle="$BUNDLE" data.root="$WORK/world/train" "${TINY[@]}" data.eval_images=1 batch_size=2 \
  optim.max_steps=1 eval.every=0 run_dir="$WORK/stageA" > "$WORK/stageA.log" 2>&1 || { cat "$WORK/stageA.log"; fail "stageA"; }
ann="$WORK/world/annotations/instances_val.json"
student='tiny<&>'   # a name that must be escaped
"$EVAL" annotations="$ann" images="$WORK/world/val" teacher="$BUNDLE" "students=[$student=$WORK/stageA/trunk.pt]" \
  output="$WORK/eval" protocol.n_images=0 protocol.cgf1=true overlays=3 progress=off > "$WORK/eval.log" 2>&1 \
  || { cat "$WORK/eval.log"; fail "instinct-eval"; }
grep -q "report written to .*report.json and report.html" "$WORK/eval.log" || { cat "$WORK/eval.log"; fail "no report line"; }
check() {  # check OUTPUT_DIR N_OVERLAYS
  "$PY" "$CHECK" "$1" > "$1.check" || fail "report.html in $1 does not match report.json"
  cat "$1.check"
  grep -q " $2 overlays embedded" "$1.check" || fail "$1: expected $2 overlays embedded"
}
check "$WORK/eval" 3

# results-file mode (the model-mode rows as results files), with overlays too
"$EVAL" --annotations "$ann" --images "$WORK/world/val" --predictions "teacher=$WORK/eval/report.json" \
  --predictions "$student=$WORK/eval/report.json" --output "$WORK/files" protocol.n_images=0 overlays=2 progress=off \
  > "$WORK/files.log" 2>&1 || { cat "$WORK/files.log"; fail "instinct-eval --predictions"; }
check "$WORK/files" 2
grep -q "results file" "$WORK/files/report.html" || fail "file mode: header does not list the results files"

# SIGTERM mid-run: neither report file (the run's overlays are removed as before)
"$EVAL" annotations="$ann" images="$WORK/world/val" teacher="$BUNDLE" output="$WORK/stopped" protocol.n_images=0 \
  overlays=12 batch_size=1 workers=1 progress=off > "$WORK/stopped.log" 2>&1 &
pid=$!
for _ in $(seq 3000); do
  [ "$(ls "$WORK/stopped/overlays" 2>/dev/null | grep -c png)" -ge 2 ] && break
  kill -0 $pid 2>/dev/null || break
  sleep 0.02
done
kill -TERM $pid 2>/dev/null || true
set +e; wait $pid; rc=$?; set -e
[ "$rc" -eq 143 ] || { cat "$WORK/stopped.log"; fail "SIGTERM: exit $rc, expected 143 (did the run end before the signal?)"; }
for f in report.json report.html; do [ ! -e "$WORK/stopped/$f" ] || fail "SIGTERM left $f"; done
echo "SIGTERM mid-run: exit 143, no report.json, no report.html"

# Headless Chromium, when installed.
browser=""
for b in chromium chromium-browser; do command -v "$b" > /dev/null 2>&1 && { browser=$b; break; }; done
if [ -z "$browser" ]; then
  echo "SKIPPED chromium check: chromium not installed"
else
  flags=(--headless --no-sandbox --disable-gpu --user-data-dir="$WORK/chrome" --no-first-run --disable-extensions)
  timeout 120 "$browser" "${flags[@]}" --dump-dom "file://$WORK/eval/report.html" > "$WORK/dom.html" 2> "$WORK/chrome.log" \
    || { tail -5 "$WORK/chrome.log"; fail "$browser --dump-dom"; }
  timeout 120 "$browser" "${flags[@]}" --window-size=1200,2000 --screenshot="$WORK/shot.png" "file://$WORK/eval/report.html" \
    >> "$WORK/chrome.log" 2>&1 || { tail -5 "$WORK/chrome.log"; fail "$browser --screenshot"; }
  "$PY" - "$WORK" <<'PYEOF'
import json, sys
from html.parser import HTMLParser
from PIL import Image
work = sys.argv[1]
rep = json.load(open(f"{work}/eval/report.json"))
class Dom(HTMLParser):
    def __init__(self):
        super().__init__(); self.tags = []
    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
d = Dom(); d.feed(open(f"{work}/dom.html", encoding="utf-8").read())
rows = [a for t, a in d.tags if t == "tr" and "data-model" in a]
assert any(t == "table" and a.get("id") == "summary" for t, a in d.tags), "rendered DOM has no summary table"
assert [a["data-model"] for a in rows] == rep["models"], ([a["data-model"] for a in rows], rep["models"])
imgs = [a for t, a in d.tags if t == "img" and a.get("src", "").startswith("data:image/png;base64,")]
assert len(imgs) == len(rep["overlays"]) == 3, (len(imgs), len(rep["overlays"]))
assert sum(t == "svg" for t, _ in d.tags) == len(rep["models"]) * 3
im = Image.open(f"{work}/shot.png").convert("RGB")
colors = im.getcolors(maxcolors=1 << 20)
white = sum(n for n, c in colors if c == (255, 255, 255)) if colors else 0
assert im.size[0] >= 800 and colors is not None and len(colors) > 50 and white < 0.99 * im.size[0] * im.size[1], \
    (im.size, None if colors is None else len(colors), white)
print(f"chromium: DOM has the summary table ({len(rows)} rows), {len(imgs)} images; screenshot {im.size}, {len(colors)} colours")
PYEOF
fi
echo "eval report.html ok"
