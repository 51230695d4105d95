#!/usr/bin/env bash
# Int8 GEMM of the work tree (Sources/CPEFTKitKernels/qgemm.c) against widen-a-tile + OpenBLAS sgemm (what
# QuantizedMatrix.matmul does), one thread, process CPU time, per format and SmolLM2 shape; also checks that the
# scalar, AVX2 and AVX-512 paths agree bit for bit and prints the worst |int8 − widened fp32| / stated bound.
#   scripts/bench_quant_gemm.sh [activation rows=512] [reps=3]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out="$PWD/.build-bench/qgemm"; mkdir -p "$out"
inc=(-I Sources/CPEFTKitKernels/include $(pkg-config --cflags openblas))
clang -O2 "${inc[@]}" Sources/CPEFTKitKernels/kernels.c Sources/CPEFTKitKernels/qgemm.c scripts/bench_quant_gemm.c \
  $(pkg-config --libs openblas) -lm -o "$out/bench"
grep -m1 'model name' /proc/cpuinfo; uptime
OPENBLAS_NUM_THREADS=1 "$out/bench" "${1:-512}" "${2:-3}"
