# Shared setup for CLI smoke tests (sourced). Provides: $TRAIN, $PY, $BUNDLE, $WORK, make_images, fail.
set -euo pipefail
: "${INSTINCT_BIN_DIR:?run through ctest}" "${INSTINCT_FIXTURES:?}" "${INSTINCT_SOURCE_DIR:?}"
TRAIN="$INSTINCT_BIN_DIR/instinct-train"
PY="${INSTINCT_PYTHON:-/usr/bin/python3}"
BUNDLE="$INSTINCT_FIXTURES/teacher/bundle"
WORK="$(mktemp -d /tmp/instinct_cli.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
make_images() {  # make_images DIR N [extra args]
  local dir=$1 n=$2; shift 2
  "$PY" "$INSTINCT_SOURCE_DIR/scripts/make_synthetic_images.py" --out "$dir" --n "$n" --seed 3 \
    --min-size 100 --max-size 260 --format jpg "$@" >/dev/null
}
# A very small student so each step takes milliseconds.
TINY=(student.preset=custom student.img_size=224 student.patch=32 student.width=48 student.depth=2
      student.heads=2 batch_size=4 data.workers=2 data.eval_images=4 log.progress=lines threads=2)
