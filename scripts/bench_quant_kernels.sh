#!/usr/bin/env bash
# Quantized matvec kernels (Sources/CPEFTKitKernels) of the work tree against those of a git revision, side by side
# in one process: weight GB/s per format and shape, AVX2 and AVX-512 paths, one thread, process CPU time (a shared
# machine's wall time is noise), activation quantized per product as in decode. Only needs clang.
#   scripts/bench_quant_kernels.sh [revision=HEAD~1] [reps=100]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
rev="${1:-HEAD~1}"; reps="${2:-100}"
out="$PWD/.build-bench/kernels"; mkdir -p "$out/old"
for f in kernels.c quant_body.h quant_simd.h; do git show "$rev:Sources/CPEFTKitKernels/$f" > "$out/old/$f"; done
inc=(-I Sources/CPEFTKitKernels/include)
clang -O2 "${inc[@]}" -c "$out/old/kernels.c" -o "$out/old.o"
for f in pk_dequantize_rows pk_isa_detect pk_matvec_rows pk_quantize_act pk_quantize_act_isa pk_type_supported; do echo "$f old_$f"; done > "$out/syms"
objcopy --redefine-syms="$out/syms" "$out/old.o" "$out/old_renamed.o"
clang -O2 "${inc[@]}" -c Sources/CPEFTKitKernels/kernels.c -o "$out/new.o"
clang -O2 "${inc[@]}" scripts/bench_quant_kernels.c "$out/new.o" "$out/old_renamed.o" -lm -o "$out/bench"
grep -m1 'model name' /proc/cpuinfo; uptime
echo "old = $rev ($(git rev-parse --short "$rev")), new = work tree"
"$out/bench" "$reps"
