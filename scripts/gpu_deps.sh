#!/usr/bin/env bash
# Prepares .gpu/sysroot: the Debian bookworm packages a CUDA build on the GPU machine needs besides
# the pip wheel's LibTorch (yaml-cpp, spdlog + fmt, nlohmann-json, CLI11, GoogleTest), unpacked with
# `dpkg -x` (no OpenCV: scripts/gpu_check.sh builds with INSTINCT_WITH_IMGCODECS=OFF and feeds PPM
# images). Run here, on a Debian machine with apt; the device tool carries `.gpu` (about 5 MiB).
#   scripts/gpu_deps.sh            # then: device run with carry [".gpu"], command scripts/gpu_check.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/.gpu/sysroot"
pkgs=(libyaml-cpp0.7 libyaml-cpp-dev libspdlog1.10 libspdlog-dev libfmt9 libfmt-dev nlohmann-json3-dev
      libcli11-dev libgtest-dev)
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && apt-get download "${pkgs[@]}" >/dev/null 2>&1) || {
  echo "gpu_deps: apt-get download failed (run 'apt-get update' first?)" >&2; exit 1; }
rm -rf "$dest.partial"
mkdir -p "$dest.partial"
for d in "$tmp"/*.deb; do dpkg -x "$d" "$dest.partial"; done
rm -rf "$dest.partial/usr/share/doc" "$dest.partial/usr/share/man"
rm -rf "$dest"
mv "$dest.partial" "$dest"
echo "gpu_deps: ${#pkgs[@]} packages unpacked into $dest ($(du -sh "$dest" | cut -f1))"
# SAM3's source for gpu_check.sh step 6 (a transient copy in the ignored .gpu/, never committed).
if [ -n "${SAM3_SRC:-}" ] && [ -d "$SAM3_SRC/sam3" ]; then
  rm -rf "$root/.gpu/sam3_src"
  mkdir -p "$root/.gpu/sam3_src"
  cp -r "$SAM3_SRC/sam3" "$root/.gpu/sam3_src/"
  echo "gpu_deps: SAM3 source staged in .gpu/sam3_src ($(du -sh "$root/.gpu/sam3_src" | cut -f1))"
fi
