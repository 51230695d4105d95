#!/usr/bin/env bash
# Quantized GGUF base against the same file widened to fp32 and against llama.cpp, one run, same thread count:
# decode (tg64) and prefill (pp512) tokens/s, LoRA r8 q,v B4xT256 step time and peak RSS.
#   swift build -c release --product peftkit-cli && bash scripts/bench_quant_base.sh [model.gguf] [threads]
set -euo pipefail
cd "$(dirname "$0")/.."
model="${1:-${PEFTKIT_SMOLLM2_GGUF:?pass a .gguf or set PEFTKIT_SMOLLM2_GGUF}}"
threads="${2:-2}"
cli="$(swift build -c release --show-bin-path)/peftkit-cli"
bin="$(bash scripts/build_llamacpp.sh 2>/dev/null | tail -1)"
grep -m1 'model name' /proc/cpuinfo
for mode in quantized widened; do
    flag=""; [ "$mode" = widened ] && flag="--widen"
    echo "== PEFTKit $mode"
    "$cli" bench --shapes smollm2 --model "$model" $flag --methods lora --no-breakdown --threads "$threads" \
        --prompt-tokens 512 --new-tokens 64 --batch 4 --seq 256 --warmup 1 --steps 3
done
echo "== llama.cpp"
"$bin/llama-bench" -m "$model" -p 512 -n 64 -t "$threads"
