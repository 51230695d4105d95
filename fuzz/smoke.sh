#!/usr/bin/env bash
# CI smoke test of every fuzz target: builds them, then fuzzes each for FUZZ_SECONDS (default: 25, or less so
# that all targets together take at most 160 s). Exits non-zero if any target crashed.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
fuzz/build.sh || exit 1
targets=()
for f in fuzz/targets/*.swift; do targets+=("$(basename "$f" .swift)"); done
per=$(( 160 / ${#targets[@]} ))
[ $per -gt 25 ] && per=25
seconds="${FUZZ_SECONDS:-$per}"
failed=()
for t in "${targets[@]}"; do
    fuzz/run.sh "$t" "$seconds" || failed+=("$t")
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz smoke: ${#failed[@]} target(s) failed: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz smoke: ${#targets[@]} targets, ${seconds} s each, no crash"
