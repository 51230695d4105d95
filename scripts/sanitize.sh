#!/usr/bin/env bash
# Runs PEFTKit's tests under sanitizers (not part of .ci/run: it takes several minutes).
#
#   scripts/sanitize.sh            everything below
#   scripts/sanitize.sh asan       Swift tests with AddressSanitizer + LeakSanitizer   (scratch .build-asan)
#   scripts/sanitize.sh tsan       Swift tests with ThreadSanitizer                    (scratch .build-tsan)
#   scripts/sanitize.sh valgrind   C example, ABI test and misuse matrix under valgrind against release libpeftkit.so
#
# UndefinedBehaviorSanitizer: swiftc rejects -sanitize=undefined on Linux (it instruments C code only); Swift
# code carries its own overflow and bounds checks in debug and -O builds, which the tests run with.
#
# The sanitized runs build only the test product (--product PEFTKitPackageTests): libpeftkit.so links with
# -z defs, which a sanitized shared library cannot satisfy (the sanitizer runtime comes with the executable).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="/opt/swift/usr/bin:$PATH"
what=("$@")
[ ${#what[@]} -eq 0 ] && what=(asan tsan valgrind)
failures=()

run() {
    local name="$1"
    shift
    echo "=== $name"
    local t0=$SECONDS
    if "$@"; then echo "--- $name: ok ($((SECONDS - t0)) s)"; else echo "--- $name: FAILED ($((SECONDS - t0)) s)"; failures+=("$name"); fi
}

swift_sanitized() {
    local san="$1" scratch="$2"
    swift build --sanitize="$san" --scratch-path "$scratch" --product PEFTKitPackageTests 2>&1 | grep -E "error:|Compiling|Build complete" | tail -3
    [ "${PIPESTATUS[0]}" -eq 0 ] || return 1
    swift test --skip-build --sanitize="$san" --scratch-path "$scratch" 2>&1 | tee "$scratch/sanitize.log" \
        | grep -E "✘|Test run with|ERROR: (Address|Leak|Thread)Sanitizer|WARNING: ThreadSanitizer|SUMMARY:"
    local rc=${PIPESTATUS[0]}
    ! grep -qE "ERROR: (Address|Leak)Sanitizer|WARNING: ThreadSanitizer" "$scratch/sanitize.log" && [ "$rc" -eq 0 ]
}

valgrind_c() {
    command -v valgrind >/dev/null || { echo "valgrind not installed (apt-get install valgrind)"; return 1; }
    swift build -c release --product peftkit 2>&1 | tail -1
    make -s -C bindings/c build/example build/test_abi build/test_misuse || return 1
    local lib="$PWD/.build/release" scratch="bindings/c/build/valgrind-scratch" ok=0
    rm -rf "$scratch" && mkdir -p "$scratch"
    for prog in "example $scratch/adapter" "test_abi $scratch" "test_misuse $scratch"; do
        set -- $prog
        echo "--- valgrind $1"
        # definite leaks only: libdispatch's worker threads keep their TLS blocks ("possibly lost") until exit.
        PEFTKIT_FIXTURES="$PWD/Tests/Fixtures" LD_LIBRARY_PATH="$lib" OPENBLAS_NUM_THREADS=1 valgrind -q --leak-check=full --errors-for-leak-kinds=definite \
            --error-exitcode=99 "bindings/c/build/$1" "${@:2}" > "$scratch/$1.log" 2>&1
        local rc=$?
        tail -1 "$scratch/$1.log"
        grep -E "^==[0-9]+== (Invalid|Conditional|Use of|Mismatched|.*definitely lost)" "$scratch/$1.log" | head -5
        [ $rc -eq 0 ] || { echo "valgrind $1: exit $rc (log: $scratch/$1.log)"; ok=1; }
    done
    return $ok
}

for w in "${what[@]}"; do
    case "$w" in
    asan) run "swift test, AddressSanitizer" env LSAN_OPTIONS="suppressions=$PWD/scripts/lsan-suppressions.txt" \
              bash -c "$(declare -f swift_sanitized); swift_sanitized address .build-asan" ;;
    tsan) run "swift test, ThreadSanitizer" env TSAN_OPTIONS="suppressions=$PWD/scripts/tsan-suppressions.txt" \
              bash -c "$(declare -f swift_sanitized); swift_sanitized thread .build-tsan" ;;
    valgrind) run "C programs under valgrind" valgrind_c ;;
    *) echo "unknown: $w (asan, tsan, valgrind)"; exit 2 ;;
    esac
done
echo
if [ ${#failures[@]} -eq 0 ]; then echo "=== sanitizers: all clean (${SECONDS} s)"; else echo "=== failed: ${failures[*]} (${SECONDS} s)"; exit 1; fi
