#!/usr/bin/env bash
# Builds the fuzz targets: PEFTKit's sources once as an instrumented static library (libFuzzer coverage +
# AddressSanitizer, -O, testable so targets reach internal entry points), then one executable per file in
# fuzz/targets/. Output: .build-fuzz/ at the repository root.
#
#   fuzz/build.sh            build every target
#   fuzz/build.sh NAME...    build these targets only (the library is rebuilt when a source changed)
#   fuzz/build.sh --seeds    also regenerate each target's seed files into fuzz/corpus/<target>/
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="/opt/swift/usr/bin:$PATH"
OUT="$PWD/.build-fuzz"
mkdir -p "$OUT"

seeds=0
targets=()
for a in "$@"; do
    if [ "$a" = "--seeds" ]; then seeds=1; else targets+=("$a"); fi
done
if [ ${#targets[@]} -eq 0 ]; then
    for f in fuzz/targets/*.swift; do targets+=("$(basename "$f" .swift)"); done
fi

SAN=(-sanitize=fuzzer,address -O -g)
# OpenBLAS through pkg-config, as the package's COpenBLAS target finds it.
BLAS=(-I Sources/COpenBLAS)
for f in $(pkg-config --cflags openblas 2>/dev/null); do BLAS+=(-Xcc "$f"); done
BLAS_LIBS=($(pkg-config --libs openblas 2>/dev/null || echo -lopenblas))
mapfile -t sources < <(find Sources/PEFTKit -name '*.swift' | sort)

# The C kernels (CPEFTKitKernels), instrumented the same way, and a module map so Swift can import them.
KDIR="$OUT/CPEFTKitKernels"
KOBJ="$KDIR/libkernels.a"
mkdir -p "$KDIR"
printf 'module CPEFTKitKernels {\n    umbrella "%s"\n    export *\n}\n' \
    "$PWD/Sources/CPEFTKitKernels/include" > "$KDIR/module.modulemap.new"
cmp -s "$KDIR/module.modulemap.new" "$KDIR/module.modulemap" || mv "$KDIR/module.modulemap.new" "$KDIR/module.modulemap"
rm -f "$KDIR/module.modulemap.new"
if [ ! -f "$KOBJ" ] || [ -n "$(find Sources/CPEFTKitKernels -newer "$KOBJ" | head -1)" ]; then
    echo "fuzz: compiling CPEFTKitKernels (instrumented)"
    rm -f "$KOBJ"
    for c in Sources/CPEFTKitKernels/*.c; do
        clang -fsanitize=fuzzer-no-link,address -O1 -g -pthread -I Sources/CPEFTKitKernels/include \
            -c "$c" -o "$KDIR/$(basename "$c" .c).o"
    done
    ar rcs "$KOBJ" "$KDIR"/*.o
fi
KERNELS=(-I "$KDIR")

# The library, rebuilt only when a source is newer than it.
lib="$OUT/libPEFTKit.a"
if [ ! -f "$lib" ] || [ "$KOBJ" -nt "$lib" ] || [ -n "$(find Sources/PEFTKit -name '*.swift' -newer "$lib" | head -1)" ]; then
    echo "fuzz: compiling PEFTKit (${#sources[@]} files, instrumented)"
    swiftc "${SAN[@]}" "${BLAS[@]}" "${KERNELS[@]}" -parse-as-library -wmo -enable-testing -module-name PEFTKit \
        -emit-module -emit-module-path "$OUT/PEFTKit.swiftmodule" -emit-library -static -o "$lib" "${sources[@]}"
fi

for t in "${targets[@]}"; do
    src="fuzz/targets/$t.swift"
    [ -f "$src" ] || { echo "fuzz: no target $src" >&2; exit 1; }
    exe="$OUT/fuzz-$t"
    if [ ! -f "$exe" ] || [ "$src" -nt "$exe" ] || [ "$lib" -nt "$exe" ] || [ "$KOBJ" -nt "$exe" ] || [ fuzz/support/Harness.swift -nt "$exe" ]; then
        echo "fuzz: building $t"
        swiftc "${SAN[@]}" "${BLAS[@]}" "${KERNELS[@]}" -parse-as-library -I "$OUT" "$src" fuzz/support/*.swift "$lib" "$KOBJ" \
            "${BLAS_LIBS[@]}" -o "$exe" 2> >(grep -v "Cannot export local symbol" >&2)
    fi
    if [ $seeds -eq 1 ]; then
        mkdir -p "fuzz/corpus/$t"
        PEFTKIT_FUZZ_WRITE_SEEDS="$PWD/fuzz/corpus/$t" "$exe" -runs=0 >/dev/null 2>&1
        echo "fuzz: seeds of $t in fuzz/corpus/$t ($(ls "fuzz/corpus/$t" | wc -l) files)"
    fi
done
