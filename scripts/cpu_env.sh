# Sourced by scripts/demo.sh and scripts/seed_study.sh: pins the CPU kernels so that the same Debian
# LibTorch gives the same numbers on any x86-64 machine with AVX2 and FMA, whatever else it has.
# Without this, PyTorch's ATen, oneDNN and OpenBLAS each pick the widest instruction set the CPU
# offers: an AVX-512 Xeon and an AVX2-only EPYC then round differently, and over a thousand training
# steps the teacher drifts to a different (equally good) one (measured: docs/results.md). Pinned here
# to AVX2 kernels (OpenBLAS's Haswell kernels are the ones it picks on AMD Zen, bit for bit).
# A value already in the environment wins; a CPU without AVX2 keeps its defaults (with a note).
if grep -qw avx2 /proc/cpuinfo 2>/dev/null && grep -qw fma /proc/cpuinfo 2>/dev/null; then
  export ATEN_CPU_CAPABILITY="${ATEN_CPU_CAPABILITY:-avx2}"
  export ONEDNN_MAX_CPU_ISA="${ONEDNN_MAX_CPU_ISA:-AVX2}"
  export OPENBLAS_CORETYPE="${OPENBLAS_CORETYPE:-Haswell}"
else
  echo "note: this CPU has no AVX2/FMA; its numbers can differ from the README's in the last digits" >&2
fi
# Passive OpenMP waiting: spinning worker threads slow everything down on a shared 2-core machine.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
