#!/usr/bin/env bash
# Micro-benchmark of the quantized-weight kernels (Kernels/QuantizedMatrix.swift): matvec GB/s of weight bytes
# per ISA path, and tile-dequant + sgemm GFLOP/s against sgemm on the widened weight, at N = 1024.
# Builds PEFTKit with -O (whole module) and the C kernels with -O2 into .build-bench/, outside SwiftPM's build.
#   scripts/bench_quant.sh [threads]     (default 1 thread, timed in process CPU time; more threads: wall time)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="/opt/swift/usr/bin:$PATH"
OUT="$PWD/.build-bench"
mkdir -p "$OUT/CPEFTKitKernels"
printf 'module CPEFTKitKernels {\n    umbrella "%s"\n    export *\n}\n' \
    "$PWD/Sources/CPEFTKitKernels/include" > "$OUT/CPEFTKitKernels/module.modulemap"
BLAS=(-I Sources/COpenBLAS)
for f in $(pkg-config --cflags openblas 2>/dev/null); do BLAS+=(-Xcc "$f"); done
BLAS_LIBS=($(pkg-config --libs openblas 2>/dev/null || echo -lopenblas))
objs=()
for c in Sources/CPEFTKitKernels/*.c; do
    o="$OUT/$(basename "$c" .c).o"
    clang -O2 -pthread -I Sources/CPEFTKitKernels/include -c "$c" -o "$o"
    objs+=("$o")
done
mapfile -t sources < <(find Sources/PEFTKit -name '*.swift' | sort)
lib="$OUT/libPEFTKit.a"
if [ ! -f "$lib" ] || [ -n "$(find Sources/PEFTKit -name '*.swift' -newer "$lib" | head -1)" ]; then
    swiftc -O -wmo -parse-as-library -enable-testing -module-name PEFTKit "${BLAS[@]}" -I "$OUT/CPEFTKitKernels" \
        -emit-module -emit-module-path "$OUT/PEFTKit.swiftmodule" -emit-library -static -o "$lib" "${sources[@]}"
fi
swiftc -O "${BLAS[@]}" -I "$OUT/CPEFTKitKernels" -I "$OUT" scripts/bench_quant_main.swift "$lib" "${objs[@]}" \
    "${BLAS_LIBS[@]}" -o "$OUT/bench_quant"
"$OUT/bench_quant" "$@"
