#!/usr/bin/env bash
# Fuzzes one target for a number of seconds.
#
#   fuzz/run.sh TARGET SECONDS [libFuzzer flags...]
#   fuzz/run.sh TARGET --repro FILE...      run the target once on each FILE (a crash input), no fuzzing
#
# Seeds come from fuzz/corpus/TARGET (in git, read only); inputs that found new coverage go to
# .build-fuzz/corpus/TARGET (not in git). A crash, trap, leak, timeout (> 10 s per input) or allocation over
# 512 MB stops the run, writes the input to .build-fuzz/artifacts/TARGET/ and exits non-zero. Add a crash input
# to fuzz/corpus/TARGET/ once it is fixed, with a unit test.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[ $# -ge 2 ] || { echo "usage: fuzz/run.sh TARGET SECONDS [libFuzzer flags...] | fuzz/run.sh TARGET --repro FILE..." >&2; exit 2; }
t="$1"
shift
fuzz/build.sh "$t" >&2
exe=".build-fuzz/fuzz-$t"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}"
# Swift runtime failures then show up in libFuzzer's own stack trace ("Swift runtime failure: ..." frame).
export SWIFT_BACKTRACE="${SWIFT_BACKTRACE:-enable=no}"

if [ "$1" = "--repro" ]; then
    shift
    exec "$exe" -rss_limit_mb=2048 -malloc_limit_mb=512 "$@"
fi

seconds="$1"
shift
work=".build-fuzz/corpus/$t"
artifacts=".build-fuzz/artifacts/$t"
mkdir -p "$work" "$artifacts" "fuzz/corpus/$t"
log=".build-fuzz/$t.log"
set +e
"$exe" "$work" "fuzz/corpus/$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=512 \
    -artifact_prefix="$artifacts/" -print_final_stats=1 "$@" >"$log" 2>&1
rc=$?
set -e
runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
cov=$(grep -oE "cov: [0-9]+" "$log" | tail -1 || true)
if [ $rc -eq 0 ]; then
    echo "fuzz $t: ${runs:-?} inputs in ${seconds} s, ${cov:-cov: ?}, no crash"
else
    echo "fuzz $t: FAILED after ${runs:-?} inputs (exit $rc); log: $log" >&2
    grep -E "ERROR|Fatal error|SUMMARY|Test unit written|==[0-9]+==" "$log" | head -20 >&2
fi
exit $rc
