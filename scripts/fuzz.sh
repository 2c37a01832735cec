#!/usr/bin/env bash
# Builds the libFuzzer harnesses (tests/fuzz/) into build-fuzz/ with clang + ASan + UBSan and fuzzes
# every parser of untrusted files.
#
#   scripts/fuzz.sh [SECONDS]          each harness for SECONDS (default 60) over its corpus
#   scripts/fuzz.sh --quick [SECONDS]  the test suite's check (ctest fuzz.smoke): every seed and
#                                      regression input once, then fuzzing until SECONDS (default 10)
#                                      have passed, from a fixed seed; exits 77 (skipped) when
#                                      clang/libFuzzer is missing
#   scripts/fuzz.sh ... -- NAME...     only the named harnesses (e.g. fuzz_pickle)
#
# Corpora: seeds from tests/fuzz/make_corpus.py (test fixtures in build/fixtures when present, or
# INSTINCT_FIXTURES), inputs libFuzzer found (build-fuzz/corpus/, kept between runs) and the
# committed regression inputs (tests/fuzz/regressions/<harness>/). Findings are written to
# build-fuzz/artifacts/<harness>/; the script exits 1 if any harness crashed, leaked, hung or ran out
# of memory. INSTINCT_JOBS sets build parallelism; INSTINCT_BUILD_LOCK names a file to flock around
# the build (machines shared by several builds).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
quick=0
if [ "${1:-}" = "--quick" ]; then quick=1; shift; fi
seconds="${1:-}"
[ $# -gt 0 ] && shift
[ "${1:-}" = "--" ] && shift
only=("$@")
if [ -z "$seconds" ]; then seconds=$([ $quick = 1 ] && echo 10 || echo 60); fi
[[ "$seconds" =~ ^[0-9]+$ ]] || { echo "fuzz.sh: SECONDS must be a whole number, got '$seconds'" >&2; exit 2; }

# clang with libFuzzer and the sanitizer runtimes (Debian: clang, libclang-rt-14-dev).
have_fuzzer() {
  command -v clang++ >/dev/null 2>&1 || return 1
  local rt
  rt="$(clang++ -print-resource-dir 2>/dev/null)/lib/linux/libclang_rt.fuzzer-x86_64.a"
  [ -f "$rt" ] || ls "$(clang++ -print-resource-dir 2>/dev/null)"/lib/*/libclang_rt.fuzzer*.a >/dev/null 2>&1
}
if ! have_fuzzer; then
  if [ $quick = 1 ]; then
    echo "fuzz.sh: SKIPPED: clang++ with libFuzzer is not installed (apt-get install clang libclang-rt-14-dev, or run scripts/fuzz.sh once)"
    exit 77
  fi
  echo "fuzz.sh: installing clang and libFuzzer (clang libclang-rt-14-dev)"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  if ! { $SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends clang libclang-rt-14-dev; } || ! have_fuzzer; then
    echo "fuzz.sh: error: clang++ with libFuzzer (libclang_rt.fuzzer) is needed; on Debian bookworm:" \
         "apt-get install clang libclang-rt-14-dev" >&2
    exit 1
  fi
fi

bdir="$root/build-fuzz"
jobs="${INSTINCT_JOBS:-$(nproc)}"
lock=()
[ -n "${INSTINCT_BUILD_LOCK:-}" ] && lock=(flock "$INSTINCT_BUILD_LOCK")
t0=$(date +%s)
if [ ! -f "$bdir/CMakeCache.txt" ]; then
  CXX=clang++ cmake -S "$root/tests/fuzz" -B "$bdir" -DCMAKE_BUILD_TYPE= >/dev/null
fi
"${lock[@]}" cmake --build "$bdir" -j "$jobs" >"$bdir/build.log" 2>&1 || {
  tail -n 40 "$bdir/build.log" >&2
  echo "fuzz.sh: error: building $bdir failed (full log: $bdir/build.log)" >&2
  exit 1
}
echo "fuzz.sh: built $bdir in $(( $(date +%s) - t0 )) s"

fixtures="${INSTINCT_FIXTURES:-$root/build/fixtures}"
rm -rf "$bdir/seeds"
"${INSTINCT_PYTHON:-/usr/bin/python3}" "$root/tests/fuzz/make_corpus.py" --out "$bdir/seeds" --fixtures "$fixtures"

harnesses=()
for src in "$root"/tests/fuzz/fuzz_*.cpp; do
  name="$(basename "$src" .cpp)"
  if [ ${#only[@]} -gt 0 ] && [[ ! " ${only[*]} " == *" $name "* ]]; then continue; fi
  harnesses+=("$name")
done

max_len() {
  case "$1" in
    fuzz_config|fuzz_bundle) echo 8192 ;;
    fuzz_pickle|fuzz_safetensors|fuzz_predictions) echo 16384 ;;
    *) echo 65536 ;;
  esac
}

export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=0:detect_odr_violation=0:handle_abort=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
export LSAN_OPTIONS="${LSAN_OPTIONS:-suppressions=$root/tests/fuzz/lsan.supp:print_suppressions=0}"
export OMP_NUM_THREADS=1
export TMPDIR="$bdir/tmp"
rm -rf "$TMPDIR"
mkdir -p "$TMPDIR"
failed=0
summary=()
for h in "${harnesses[@]}"; do
  corpus="$bdir/corpus/$h"
  art="$bdir/artifacts/$h"
  mkdir -p "$corpus" "$art" "$bdir/seeds/$h"
  reg="$root/tests/fuzz/regressions/$h"
  dirs=("$corpus" "$bdir/seeds/$h")
  [ -d "$reg" ] && dirs+=("$reg")
  log="$bdir/$h.log"
  # libFuzzer runs every input of the corpus directories once, then mutates for the rest of the time
  # (new inputs go to build-fuzz/corpus/); SECONDS=0 runs the inputs only.
  flags=(-max_len="$(max_len "$h")" -timeout=10 -rss_limit_mb=2048 -error_exitcode=1 -timeout_exitcode=1
         -print_final_stats=1 -artifact_prefix="$art/")
  if [ "$seconds" -gt 0 ]; then flags+=(-max_total_time="$seconds"); else flags+=(-runs=0); fi
  # The test suite's burst starts from a fixed seed, so a failure there can be replayed with the same
  # mutations; longer runs draw a fresh seed each time to explore more.
  [ $quick = 1 ] && flags+=(-seed=1)
  dict="$root/tests/fuzz/${h/fuzz_predictions/fuzz_coco}.dict"
  [ -f "$dict" ] && flags+=(-dict="$dict")
  start=$(date +%s)
  rc=0
  "$bdir/$h" "${flags[@]}" "${dirs[@]}" >"$log" 2>&1 || rc=$?
  secs=$(( $(date +%s) - start ))
  execs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | awk '{s += $2} END {print s + 0}')
  finding=$(grep -m1 -oE 'ERROR: (AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|libFuzzer)[^(]*|runtime error:.*|FUZZ FINDING:.*' "$log" || true)
  status="ok"
  if [ $rc -ne 0 ]; then
    status="CRASH (exit $rc): ${finding:-see log}"
    failed=1
    grep -E 'Test unit written to|^artifact_prefix' "$log" | tail -n 2 | sed 's/^/    /' || true
  fi
  line=$(printf '%-20s execs %10s  seconds %5s  crashes %s  %s' "$h" "$execs" "$secs" "$([ $rc -ne 0 ] && echo 1 || echo 0)" "$status")
  echo "$line"
  summary+=("$line")
done
echo "fuzz.sh: summary (logs: $bdir/<harness>.log, findings: $bdir/artifacts/)"
printf '  %s\n' "${summary[@]}"
exit $failed
