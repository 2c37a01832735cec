#!/usr/bin/env bash
# Configures and builds into build/ (Release) with the Debian LibTorch. Usage: scripts/build.sh [targets...]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/install_deps.sh"
jobs="${INSTINCT_JOBS:-$(nproc)}"
cmake -S "$root" -B "$root/build" -DCMAKE_BUILD_TYPE=Release >/dev/null
if [ $# -gt 0 ]; then
  for t in "$@"; do cmake --build "$root/build" -j "$jobs" --target "$t"; done
else
  cmake --build "$root/build" -j "$jobs"
fi
