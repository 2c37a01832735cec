#!/usr/bin/env bash
# Builds everything and runs every test (unit, Python parity, CLI smoke) with ctest.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/build.sh"
cd "$root/build"
ctest --output-on-failure -j "${INSTINCT_TEST_JOBS:-2}" --timeout 900 "$@"
