#!/usr/bin/env bash
# Data-parallel training under Open MPI gives the answer of one process (docs/DISTRIBUTED.md), on the tiny llama
# fixture. Run from the repository root after `swift build -c release --product peftkit-cli`; needs mpirun
# (openmpi-bin) and python3 with numpy. Checks:
#   1. mpirun -np 2 and -np 3 (batch 5: uneven rows) save an adapter equal to one process's within 1e-6
#      relative (largest difference printed), and every rank's weights are bit-identical;
#   2. a run checkpointed under 2 ranks resumes under 1, and the other way, with the losses of unbroken runs;
#   3. ranks that disagree (data file, seed) stop before the first step, saying which;
#   4. a rank killed with SIGKILL, or stopped with SIGSTOP (a hang), ends the job non-zero within 30 s.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cli="${PEFTKIT_CLI:-$PWD/.build/release/peftkit-cli}"
mpirun=(mpirun --oversubscribe --allow-run-as-root --mca btl self,tcp,vader)
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

cp Tests/Fixtures/llama/model/config.json Tests/Fixtures/llama/model/model.safetensors Tests/Fixtures/tokenizer/tiny/* "$tmp/"
for i in $(seq 1 12); do
    printf '%s\n' "{\"prompt\": \"1+$i\", \"response\": \"two $i abc\"}" "{\"text\": \"abc abc $i ab\"}" \
        "{\"messages\": [{\"role\": \"user\", \"content\": \"hi $i\"}, {\"role\": \"assistant\", \"content\": \"yo yo $i\"}]}"
done > "$tmp/d.jsonl"
train=(train --model "$tmp" --data "$tmp/d.jsonl" --steps 6 --batch 5 --seq-len 64 --lr 1e-2 --seed 7 --threads 1
       --rank 4 --warmup 2)
export PEFTKIT_PRINT_LOSSES=1   # rank 0 prints "loss step S BITS VALUE" on stderr

# compare A B [TOL]: the largest relative difference of the adapters' tensors (max |a-b| / max |b| per tensor),
# at most TOL (default 1e-6).
compare() {
    python3 - "$1/adapter_model.safetensors" "$2/adapter_model.safetensors" "${3:-1e-6}" <<'EOF'
import json, struct, sys
import numpy as np
def read(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    head = json.loads(raw[8:8 + n])
    out = {}
    for k, v in head.items():
        if k == "__metadata__":
            continue
        assert v["dtype"] == "F32", v["dtype"]
        a, b = v["data_offsets"]
        out[k] = np.frombuffer(raw[8 + n + a:8 + n + b], dtype=np.float32).reshape(v["shape"])
    return out
x, y = read(sys.argv[1]), read(sys.argv[2])
assert x.keys() == y.keys() and x, "different tensor names"
worst, name = 0.0, ""
for k in x:
    d = float(np.abs(x[k].astype(np.float64) - y[k]).max()) / max(float(np.abs(y[k]).max()), 1e-30)
    if d > worst:
        worst, name = d, k
print(f"largest relative difference {worst:.3e} ({name}, {len(x)} tensors)")
sys.exit(0 if worst <= float(sys.argv[3]) else 1)
EOF
}
# losses LOG: the "step value" pairs a run printed.
losses() { grep '^loss step' "$1" | awk '{print $3, $5}'; }
# same_losses A B: equal within 1e-5 relative, step by step.
same_losses() {
    python3 - "$1" "$2" <<'EOF'
import sys
a = dict(l.split() for l in open(sys.argv[1]) if l.strip())
b = dict(l.split() for l in open(sys.argv[2]) if l.strip())
assert a.keys() == b.keys() and a, (sorted(a), sorted(b))
worst = max(abs(float(a[k]) - float(b[k])) / abs(float(b[k])) for k in a)
print(f"losses of steps {','.join(sorted(a, key=int))}: largest relative difference {worst:.3e}")
sys.exit(0 if worst <= 1e-5 else 1)
EOF
}

echo "--- 1. one process against 2 and 3 ranks"
# Batch 4 over 2 ranks is one process with --micro-batch 2: the same sums in the same order, bit for bit.
"$cli" "${train[@]}" --batch 4 --micro-batch 2 --out "$tmp/one-mb2" > "$tmp/one-mb2.log" 2>&1 || { cat "$tmp/one-mb2.log"; exit 1; }
"${mpirun[@]}" -np 2 "$cli" "${train[@]}" --batch 4 --out "$tmp/np2-b4" > "$tmp/np2-b4.log" 2>&1 || { cat "$tmp/np2-b4.log"; exit 1; }
echo -n "batch 4, np 2 against 1 process with --micro-batch 2: "; compare "$tmp/np2-b4" "$tmp/one-mb2" 0
# Batch 5 (uneven: 2+3 and 1+2+2 rows): one process with --micro-batch 3 (2 parts: 2+3 rows) or 2 (3 parts:
# 1+2+2) splits the batch as 2 or 3 ranks do and adds the parts in the same order: bit for bit again.
# Against one process on the whole batch the sums are grouped differently, so float rounding differs a
# little and AdamW carries it along the steps.
"$cli" "${train[@]}" --out "$tmp/one" > "$tmp/one.log" 2>&1 || { cat "$tmp/one.log"; exit 1; }
for n in 2 3; do
    "${mpirun[@]}" -np $n "$cli" "${train[@]}" --out "$tmp/np$n" > "$tmp/np$n.log" 2>&1 || { cat "$tmp/np$n.log"; exit 1; }
    mb=$(( (5 + n - 1) / n ))
    "$cli" "${train[@]}" --micro-batch $mb --out "$tmp/one-mb$mb" > "$tmp/one-mb$mb.log" 2>&1 || { cat "$tmp/one-mb$mb.log"; exit 1; }
    echo -n "batch 5, np $n against 1 process with --micro-batch $mb: "; compare "$tmp/np$n" "$tmp/one-mb$mb" 0
    grep -q "weights bit-identical on all $n ranks" "$tmp/np$n.log"
    test "$(grep -o 'trainable weights fnv1a64 [0-9a-f]*' "$tmp/np$n.log" | sort -u | wc -l)" -eq 1
    test "$(grep -c 'trainable weights fnv1a64' "$tmp/np$n.log")" -eq $n
    echo "np $n: $(grep -o 'weights bit-identical.*' "$tmp/np$n.log")"
    echo -n "batch 5, np $n against 1 process: "; compare "$tmp/np$n" "$tmp/one" 1e-5
    losses "$tmp/np$n.log" > "$tmp/np$n.losses"
done
losses "$tmp/one.log" > "$tmp/one.losses"
echo -n "np 2 against 1 process, "; same_losses "$tmp/np2.losses" "$tmp/one.losses"
# eval: batches dealt to the ranks, sums added in rank order: the same loss and token count as one process.
"$cli" eval --model "$tmp" --adapter "$tmp/one" --data "$tmp/d.jsonl" --batch 3 --threads 1 > "$tmp/e1.log" 2>&1
"${mpirun[@]}" -np 2 "$cli" eval --model "$tmp" --adapter "$tmp/one" --data "$tmp/d.jsonl" --batch 3 --threads 1 > "$tmp/e2.log" 2>&1 \
    || { cat "$tmp/e2.log"; exit 1; }
diff <(grep perplexity "$tmp/e1.log") <(grep perplexity "$tmp/e2.log")
echo "eval under 2 ranks: $(grep perplexity "$tmp/e2.log" | tr '\n' ';')"

echo "--- 2. checkpoint under 2 ranks, resume under 1; and the other way"
"${mpirun[@]}" -np 2 "$cli" "${train[@]}" --out "$tmp/a" --checkpoint-dir "$tmp/ck2" --stop-after 3 > "$tmp/a.log" 2>&1 || { cat "$tmp/a.log"; exit 1; }
"$cli" "${train[@]}" --out "$tmp/a" --resume "$tmp/ck2" > "$tmp/a2.log" 2>&1 || { cat "$tmp/a2.log"; exit 1; }
cat <(losses "$tmp/a.log") <(losses "$tmp/a2.log") > "$tmp/a.losses"
echo -n "2 ranks then 1 against unbroken 1 process, "; same_losses "$tmp/a.losses" "$tmp/one.losses"
echo -n "2 ranks then 1 against unbroken 1 process, adapter: "; compare "$tmp/a" "$tmp/one" 1e-5
"$cli" "${train[@]}" --out "$tmp/b" --checkpoint-dir "$tmp/ck1" --stop-after 3 > "$tmp/b.log" 2>&1 || { cat "$tmp/b.log"; exit 1; }
"${mpirun[@]}" -np 2 "$cli" "${train[@]}" --out "$tmp/b" --resume "$tmp/ck1" > "$tmp/b2.log" 2>&1 || { cat "$tmp/b2.log"; exit 1; }
cat <(losses "$tmp/b.log") <(losses "$tmp/b2.log") > "$tmp/b.losses"
echo -n "1 process then 2 ranks against unbroken 2 ranks, "; same_losses "$tmp/b.losses" "$tmp/np2.losses"
echo -n "1 process then 2 ranks against unbroken 1 process, adapter: "; compare "$tmp/b" "$tmp/one" 1e-5

echo "--- 3. ranks that disagree stop before the first step"
sed 's/abc/abd/' "$tmp/d.jsonl" > "$tmp/other.jsonl"
other=("${train[@]}"); other[4]="$tmp/other.jsonl"
# Each rank's stderr goes to its own file (--output-filename): mpirun's own abort banner, printed while it still
# forwards the ranks' output, can land in the middle of a forwarded line.
if "${mpirun[@]}" --output-filename "$tmp/xo" -np 1 "$cli" "${train[@]}" --out "$tmp/x" : \
        -np 1 "$cli" "${other[@]}" --out "$tmp/x" > "$tmp/x.log" 2>&1; then
    echo "ranks with different data files trained"; exit 1
fi
cat "$tmp"/xo/*/rank.*/stderr > "$tmp/x.err"
grep -q "rank 1 differs from rank 0 in: data file" "$tmp/x.err"
! grep -q '^loss step' "$tmp/x.err"
echo "different data: $(grep -o 'rank 1 differs from rank 0 in: [^;]*' "$tmp/x.err" | head -1)"
if "${mpirun[@]}" --output-filename "$tmp/yo" -np 1 "$cli" "${train[@]}" --out "$tmp/x" : \
        -np 1 "$cli" "${train[@]}" --seed 8 --out "$tmp/x" > "$tmp/y.log" 2>&1; then
    echo "ranks with different seeds trained"; exit 1
fi
cat "$tmp"/yo/*/rank.*/stderr > "$tmp/y.err"
grep -q "rank 1 differs from rank 0 in: adapter config, seed" "$tmp/y.err"
echo "different seed: $(grep -o 'rank 1 differs from rank 0 in: [^;]*' "$tmp/y.err" | head -1)"

echo "--- 4. a rank killed (SIGKILL) or hung (SIGSTOP) mid-run ends the job non-zero within 30 s"
# kill_rank SIGNAL: starts a long run, waits for step 20, signals rank 1, measures until mpirun returns.
kill_rank() {
    local sig=$1 log="$tmp/kill-$1.log"
    PEFTKIT_MPI_TIMEOUT=10 "${mpirun[@]}" -np 2 "$cli" "${train[@]}" --steps 1000000 --out "$tmp/k" \
        --checkpoint-dir "$tmp/ck-kill" --checkpoint-every 10 > "$log" 2>&1 &
    local mp=$!
    for _ in $(seq 1 300); do grep -q '^loss step 20 ' "$log" && break; sleep 0.1; done
    local victim=""
    for p in $(awk -v pp=$mp '$4 == pp {print $1}' /proc/[0-9]*/stat 2>/dev/null); do
        if tr '\0' '\n' < /proc/$p/environ 2>/dev/null | grep -qx 'OMPI_COMM_WORLD_RANK=1'; then victim=$p; fi
    done
    test -n "$victim" || { echo "rank 1 not found"; kill $mp; exit 1; }
    local t0=$SECONDS rc=0
    kill -$sig $victim
    wait $mp || rc=$?
    local dt=$((SECONDS - t0))
    echo "SIG$sig to rank 1 (pid $victim): mpirun exited $rc after $dt s"
    test $rc -ne 0 && test $dt -le 30
    tail -n 30 "$log" | grep -iE "rank|signal|abort" | head -4 | sed 's/^/    /'
    # The last checkpoint stays loadable: resume it for one more step under one process.
    local at; at="$(sed -n 's/.*"step" *: *\([0-9]*\).*/\1/p' "$tmp/ck-kill/checkpoint.json" | head -1)"
    "$cli" "${train[@]}" --steps 1000000 --resume "$tmp/ck-kill" --stop-after $((at + 1)) --out "$tmp/k" > "$tmp/k2.log" 2>&1 \
        || { cat "$tmp/k2.log"; exit 1; }
    echo "    the checkpoint of step $at resumes"
    rm -rf "$tmp/ck-kill"
}
kill_rank KILL
kill_rank STOP
echo "mpi_check: all passed"
