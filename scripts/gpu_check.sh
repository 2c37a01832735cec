#!/usr/bin/env bash
# The prepared GPU-machine check (one command; results under $OUT). Before it, here:
#   scripts/gpu_deps.sh                       # unpacks the Debian build deps into .gpu/ (carried)
# then on the device tool: run(command="bash scripts/gpu_check.sh", carry=[".gpu"], timeout_s=540).
# Steps (each logged with its time; a failing step is recorded and the next ones still run):
#   1. build with the machine's pip LibTorch (CUDA) + the carried deps, INSTINCT_WITH_IMGCODECS=OFF;
#   2. unit tests: every gtest (CUDA tests included; tests needing JPEG decoding fail in this build
#      and are listed, not hidden), the CUDA tests separately;
#   3. Stage A then concept distillation on CUDA (bf16) with the tiny reference teacher and PPM images,
#      and a 2-process data-parallel Stage A on the one GPU (Gloo; NCCL refuses two ranks on one
#      GPU, so NCCL runs as the one-rank unit test Distributed.CudaNcclSingleRank...);
#   4. the optimizer step (clip + AdamW + EMA) per kernel: loop, foreach, fused (instinct-bench optim);
#   5. benchmark: Stage A with a teacher of SAM3's real trunk dimensions (random weights, 1008 px,
#      446M parameters) and a ViT-B/16 student at 1008 px: instinct-train vs the PyTorch loop of
#      scripts/bench_stageA_torch.py, images/s, MFU, peak GPU memory; then a short profile=true run
#      for the per-phase step time (data, teacher, student forward + loss, backward, optimizer);
#   6. when .gpu/sam3_src holds SAM3's source (scripts/gpu_deps.sh stages it from $SAM3_SRC): the full
#      SAM3 export with torch 2.x on CUDA (random weights; time, peak GPU memory, file sizes, every
#      module checked against SAM3's eager code), then Stage A on that export (the real SAM3 trunk as
#      the teacher) and instinct-eval of it on a few PPM images (text, box, point prompts).
# Env: GPU_CHECK_STEPS (benchmark steps, default 30), GPU_CHECK_BATCH (default 16).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gpu_check_out}"
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1
W=/tmp/gpu_check
mkdir -p "$W"
status=()
t_start=$(date +%s)
step() { echo; echo "=== [$(date +%T) +$(( $(date +%s) - t_start ))s] $*"; }
record() { status+=("$1=$2"); echo ">>> $1: $2"; }
SR="$PWD/.gpu/sysroot/usr"
L="$SR/lib/x86_64-linux-gnu"
export LD_LIBRARY_PATH="$L${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PYTHONUNBUFFERED=1

step "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name())'
git log -1 --format='commit %h %s' 2>/dev/null || true
[ -d "$SR" ] || { echo "missing .gpu/sysroot: run scripts/gpu_deps.sh here and carry .gpu"; exit 2; }

step "1. build (pip LibTorch + carried deps, no OpenCV; NCCL when the wheel ships nccl.h)"
TP="$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')"
TI="$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "include"))')"
echo "nlohmann symbols exported by libtorch_cpu.so: $(nm -D --defined-only "$(dirname "$TI")/lib/libtorch_cpu.so" 2>/dev/null | c++filt | grep -o 'nlohmann::json_abi[a-z_0-9]*' | sort | uniq -c | tr '\n' ' ')"
echo "wheel ships gloo headers: $([ -f "$TI/gloo/algorithm.h" ] && echo yes || echo no); nlohmann in the wheel: $(ls -d "$TI"/nlohmann 2>/dev/null || echo none)"
NCCL_INC="$(python3 -c 'import os, nvidia.nccl as n; print(os.path.join(list(n.__path__)[0], "include"))' 2>/dev/null)"
nccl=(-DINSTINCT_WITH_NCCL=OFF)
if [ -n "$NCCL_INC" ] && [ -f "$NCCL_INC/nccl.h" ]; then nccl=(-DINSTINCT_WITH_NCCL=ON -DINSTINCT_NCCL_INCLUDE_DIR="$NCCL_INC"); fi
echo "NCCL: ${nccl[*]}"
build() {  # build NCCL_FLAGS...: configure + build into build-cuda
  cmake -S . -B build-cuda -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$TP" "$@" \
     -DINSTINCT_WITH_IMGCODECS=OFF -DINSTINCT_PYTHON=python3 -DTORCH_CUDA_ARCH_LIST=9.0 \
     -Dyaml-cpp_DIR="$L/cmake/yaml-cpp" -Dspdlog_DIR="$L/cmake/spdlog" -Dfmt_DIR="$L/cmake/fmt" \
     -DGTest_DIR="$L/cmake/GTest" -Dnlohmann_json_DIR="$SR/share/cmake/nlohmann_json" \
     -DCLI11_DIR="$SR/share/cmake/CLI11" -DINSTINCT_WITH_TOKENIZER=OFF > "$W/configure.log" 2>&1 &&
  cmake --build build-cuda -j "$(nproc)" --target instinct-train instinct_tests instinct-bench > "$W/build.log" 2>&1
}
if build "${nccl[@]}"; then
  record build "ok (${nccl[0]})"
else
  tail -60 "$W/configure.log" "$W/build.log" 2>/dev/null | grep -v "^\[" | tail -80
  cp "$W/build.log" "$OUT/build_first.log" 2>/dev/null
  if [ "${nccl[0]}" = "-DINSTINCT_WITH_NCCL=ON" ] && { echo "retrying without NCCL"; build -DINSTINCT_WITH_NCCL=OFF; }; then
    record build "ok without NCCL (the NCCL build FAILED: build_first.log)"
  else
    cp "$W/build.log" "$OUT/" 2>/dev/null
    record build FAILED
    echo "${status[@]}" > "$OUT/status.txt"
    exit 1
  fi
fi
B=build-cuda
"$B/instinct-train" --help | head -3

step "2. unit tests"
python3 tests/python/make_fixtures.py --out "$B/fixtures" > "$W/fixtures.log" 2>&1 || { tail -20 "$W/fixtures.log"; record fixtures FAILED; }
export INSTINCT_FIXTURES="$PWD/$B/fixtures" INSTINCT_SOURCE_DIR="$PWD" INSTINCT_BIN_DIR="$PWD/$B" INSTINCT_PYTHON=python3
timeout 120 "$B/tests/instinct_tests" --gtest_filter='*Cuda*' 2>&1 | tee "$W/gtest_cuda.log" | grep -E "^\[ *(OK|FAILED|SKIPPED|PASSED) " 
grep -q "FAILED" "$W/gtest_cuda.log" && record cuda_tests FAILED || record cuda_tests "$(grep -c '\[       OK \]' "$W/gtest_cuda.log") passed"
timeout 240 stdbuf -oL -eL "$B/tests/instinct_tests" > "$W/gtest_all.log" 2>&1
rc=$?
grep -E "^\[  (PASSED|FAILED)  \]|tests ran" "$W/gtest_all.log" | head -40
if [ $rc -gt 1 ]; then  # crashed: name the test that was running, rerun it alone, get a backtrace
  crashed="$(grep -E '^\[ RUN +\]' "$W/gtest_all.log" | tail -1 | awk '{print $NF}')"
  echo "gtest exited with $rc during: $crashed"; tail -15 "$W/gtest_all.log"
  timeout 60 "$B/tests/instinct_tests" --gtest_filter="$crashed" > "$W/gtest_crashed_alone.log" 2>&1
  echo "$crashed alone: rc=$? ($(tail -1 "$W/gtest_crashed_alone.log"))"
  if command -v gdb > /dev/null; then
    timeout 60 gdb -batch -ex run -ex bt --args "$B/tests/instinct_tests" --gtest_filter="$crashed" > "$OUT/gtest_crash_bt.txt" 2>&1
  else
    echo "no gdb here for a backtrace"
  fi
  # Past the crash: every test after it in one more run.
  timeout 150 "$B/tests/instinct_tests" --gtest_filter="-$crashed" > "$W/gtest_rest.log" 2>&1
  echo "without $crashed: rc=$? $(grep -E '^\[  (PASSED|FAILED)  \]' "$W/gtest_rest.log" | head -3 | tr '\n' ' ')"
  grep -E '^\[  FAILED  \]' "$W/gtest_rest.log" | head -20
  cp "$W/gtest_rest.log" "$OUT/" 2>/dev/null
fi
record all_tests "rc=$rc $(grep -E '^\[  PASSED  \]' "$W/gtest_all.log" | head -1)"
cp "$W/gtest_all.log" "$OUT/" 2>/dev/null

step "3. Stage A + concept on CUDA (tiny reference teacher, PPM images)"
python3 scripts/make_reference_teacher.py --out "$W/tiny" --preset tiny --no-verify
python3 scripts/make_synthetic_images.py --out "$W/img" --n 300 --seed 1 --min-size 160 --max-size 480 --format ppm
timeout 150 "$B/instinct-train" stageA --config configs/stageA_tiny_cpu.yaml device=cuda teacher.bundle="$W/tiny" \
  data.root="$W/img" run_dir="$W/runs/sa" optim.max_steps=150 eval.every=50 log.progress=false > "$W/sa.log" 2>&1
tail -4 "$W/sa.log"; grep '"eval"' "$W/runs/sa/metrics.jsonl" | head -1; grep '"eval"' "$W/runs/sa/metrics.jsonl" | tail -1
[ -f "$W/runs/sa/trunk.pt" ] && record stageA_cuda ok || record stageA_cuda FAILED
timeout 150 "$B/instinct-train" concept --config configs/concept_tiny_cpu.yaml device=cuda teacher.bundle="$W/tiny" \
  init.path="$W/runs/sa/trunk.pt" data.root="$W/img" run_dir="$W/runs/c" optim.max_steps=40 eval.every=20 profile=true \
  log.progress=false > "$W/c.log" 2>&1
tail -4 "$W/c.log"; grep '"train"' "$W/runs/c/metrics.jsonl" | tail -1
[ -f "$W/runs/c/trunk.pt" ] && record concept_cuda ok || record concept_cuda FAILED
cp "$W/runs/sa/metrics.jsonl" "$OUT/stageA_tiny_metrics.jsonl" 2>/dev/null
cp "$W/runs/c/metrics.jsonl" "$OUT/concept_tiny_metrics.jsonl" 2>/dev/null

step "3b. data parallel: 2 processes on the one GPU (gloo, LOCAL_RANK 0 for both)"
port=$(( 20000 + RANDOM % 20000 ))
dp=(stageA --config configs/stageA_tiny_cpu.yaml device=cuda teacher.bundle="$W/tiny" data.root="$W/img"
    optim.max_steps=20 eval.every=0 log.progress=false distributed.backend=gloo distributed.timeout_s=60)
WORLD_SIZE=2 LOCAL_RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port RANK=1 timeout 120 "$B/instinct-train" "${dp[@]}" run_dir="$W/runs/dp" > "$W/dp1.log" 2>&1 &
WORLD_SIZE=2 LOCAL_RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port RANK=0 timeout 120 "$B/instinct-train" "${dp[@]}" run_dir="$W/runs/dp" > "$W/dp0.log" 2>&1
rc0=$?; wait $!; rc1=$?
tail -3 "$W/dp0.log"; tail -2 "$W/dp1.log"
[ $rc0 -eq 0 ] && [ $rc1 -eq 0 ] && record dp_2proc ok || record dp_2proc "FAILED (rank0 rc $rc0, rank1 rc $rc1)"

step "4. optimizer step per kernel (clip + AdamW + EMA, ViT-B/16)"
timeout 60 "$B/instinct-bench" optim --device cuda --preset vit_base --steps 20 | tee "$OUT/bench_optim.txt"

step "5. benchmark: SAM3-size teacher trunk, ViT-B/16 student at 1008 px"
steps="${GPU_CHECK_STEPS:-30}"; batch="${GPU_CHECK_BATCH:-16}"
python3 scripts/make_reference_teacher.py --out "$W/sam3" --preset sam3 --trunk-only --no-verify --device cuda
python3 scripts/make_synthetic_images.py --out "$W/img1008" --n $(( batch * 4 + 16 )) --seed 2 --width 1008 --height 1008 --format ppm
nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > "$W/mem_cpp.txt" &
smi=$!
timeout 200 "$B/instinct-train" stageA --config configs/stageA_vitb_sam3.yaml teacher.bundle="$W/sam3" \
  data.root="$W/img1008" data.eval_images=16 init.from=random run_dir="$W/runs/bench" batch_size="$batch" \
  optim.max_steps="$steps" eval.every=0 checkpoint.every=0 log.every=5 log.progress=false > "$W/bench.log" 2>&1
kill $smi 2>/dev/null
tail -5 "$W/bench.log"
grep -E "optimizer: AdamW" "$W/bench.log"
# The same run, short, with a device sync at each phase boundary: the exact step-time split.
timeout 120 "$B/instinct-train" stageA --config configs/stageA_vitb_sam3.yaml teacher.bundle="$W/sam3" \
  data.root="$W/img1008" data.eval_images=16 init.from=random run_dir="$W/runs/profile" batch_size="$batch" \
  optim.max_steps=10 eval.every=0 checkpoint.every=0 log.every=5 log.progress=false profile=true > "$W/profile.log" 2>&1
tail -1 "$W/runs/profile/metrics.jsonl" 2>/dev/null | tr ',' '\n' | grep -E '"(ms|time)_|images_per_s' | tr '\n' ' '; echo
cp "$W/runs/profile/metrics.jsonl" "$OUT/bench_cpp_profile_metrics.jsonl" 2>/dev/null
echo "C++ peak GPU memory used (nvidia-smi, MiB): $(sort -n "$W/mem_cpp.txt" | tail -1)"
cp "$W/runs/bench/metrics.jsonl" "$OUT/bench_cpp_metrics.jsonl" 2>/dev/null
timeout 200 python3 scripts/bench_stageA_torch.py --teacher "$W/sam3" --batch "$batch" --steps "$steps" \
  --cpp-metrics "$W/runs/bench/metrics.jsonl" --out "$OUT/bench.json" && record bench ok || record bench FAILED
echo "cpp_peak_gpu_mib_nvidia_smi $(sort -n "$W/mem_cpp.txt" | tail -1)" >> "$OUT/bench.json.txt"

step "6. SAM3 itself: full export on CUDA with torch 2.x, Stage A and instinct-eval on it"
if [ -d .gpu/sam3_src/sam3 ]; then
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > "$W/mem_export.txt" &
  smi=$!
  t0=$(date +%s)
  timeout 420 python3 scripts/export_sam3.py --sam3-src .gpu/sam3_src --random-init 0 --size full --device cuda \
    --out "$W/sam3_full" --force > "$W/export.log" 2>&1
  rc=$?
  kill $smi 2>/dev/null
  grep -E "built|traced|wrote|error" "$W/export.log" | tail -12
  echo "export peak GPU memory used (nvidia-smi, MiB): $(sort -n "$W/mem_export.txt" | tail -1)"
  cp "$W/export.log" "$OUT/sam3_export.log" 2>/dev/null; cp "$W/sam3_full/export_report.json" "$OUT/" 2>/dev/null
  if [ $rc -eq 0 ]; then
    record sam3_export "ok ($(( $(date +%s) - t0 )) s, $(du -sh "$W/sam3_full" | cut -f1))"
    timeout 200 "$B/instinct-train" stageA --config configs/stageA_vitb_sam3.yaml teacher.bundle="$W/sam3_full" \
      data.root="$W/img1008" data.eval_images=16 init.from=random run_dir="$W/runs/sam3_sa" batch_size="$batch" \
      optim.max_steps=20 eval.every=0 checkpoint.every=0 log.every=5 log.progress=false > "$W/sam3_sa.log" 2>&1 \
      && record sam3_stageA "ok: $(grep -o '[0-9.]* img/s' "$W/sam3_sa.log" | tail -1)" || { tail -5 "$W/sam3_sa.log"; record sam3_stageA FAILED; }
    python3 - "$W/img1008" "$W/sam3_eval.json" <<'PYEOF'
import json, os, sys
d = sys.argv[1]
files = sorted(f for f in os.listdir(d) if f.endswith(".ppm"))[:8]
ann = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "red pickup truck"}]}
for i, f in enumerate(files, 1):
    ann["images"].append({"id": i, "file_name": f, "width": 1008, "height": 1008})
    for k, (c, b) in enumerate([(1, [100, 150, 400, 500]), (2, [500, 300, 450, 600])]):
        x, y, w, h = b
        ann["annotations"].append({"id": 2 * i + k, "image_id": i, "category_id": c, "iscrowd": 0, "bbox": b,
                                   "area": float(w * h), "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]]})
json.dump(ann, open(sys.argv[2], "w"))
PYEOF
    timeout 200 "$B/instinct-eval" annotations="$W/sam3_eval.json" images="$W/img1008" teacher="$W/sam3_full" students=[] \
      protocol.n_images=0 protocol.targets=all device=cuda output="$W/sam3_eval" progress=off > "$W/sam3_eval.log" 2>&1 \
      && record sam3_eval "ok: $(grep -o '"images_per_s": [0-9.]*' "$W/sam3_eval/report.json" | head -1)" \
      || { tail -5 "$W/sam3_eval.log"; record sam3_eval FAILED; }
    tail -6 "$W/sam3_eval.log"; cp "$W/sam3_eval/report.json" "$OUT/sam3_eval_report.json" 2>/dev/null
  else
    record sam3_export "FAILED (rc $rc): $(grep -E 'error' "$W/export.log" | tail -1)"
  fi
else
  echo "no .gpu/sam3_src: run SAM3_SRC=... scripts/gpu_deps.sh here to stage SAM3's source"
fi

step "done"
echo "${status[@]}" | tee "$OUT/status.txt"
