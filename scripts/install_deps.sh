#!/usr/bin/env bash
# Installs the Debian bookworm packages the build, tests and demo need (only those missing).
set -euo pipefail
pkgs=(build-essential cmake libtorch-dev libopencv-dev nlohmann-json3-dev libcli11-dev libspdlog-dev
      libyaml-cpp-dev libgtest-dev libgloo-dev libopenblas0-pthread python3-torch python3-torchvision python3-scipy
      python3-pil python3-numpy libicu-dev zlib1g-dev python3-regex python3-skimage python3-tqdm
      cython3 python3-dev python3-setuptools python3-matplotlib)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install_deps: all ${#pkgs[@]} packages present"
  exit 0
fi
echo "install_deps: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
