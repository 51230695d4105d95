#!/bin/sh
# Side-by-side rounds on a shared machine: each configuration runs in every engine one after the other, so the
# engines see the same load. Usage (from the repository root):
#   AFTER=path/to/peftkit-cli [BEFORE=path/to/older/peftkit-cli] HF=smollm2-fp32-hf-folder F32=smollm2-F32.gguf \
#     sh scripts/bench_interleaved.sh [rounds]
# HF and F32 are what scripts/bench_compare.py --smollm2-gguf leaves in /tmp/peftkit-bench. Prints one line per run,
# with the load average before each round.
set -u
ROUNDS=${1:-2}
HF=${HF:-/tmp/peftkit-bench/SmolLM2-135M-Instruct.Q4_1-fp32-hf}
F32=${F32:-/tmp/peftkit-bench/SmolLM2-135M-Instruct.Q4_1-F32.gguf}
PYDEPS=${PYDEPS:-/work/pydeps/peft:/work/pydeps/ah}
LLAMACPP=${LLAMACPP:-/work/pydeps/llamacpp}
BINS="after=$AFTER"
[ -n "${BEFORE:-}" ] && BINS="$BINS before=$BEFORE"
load() { uptime | sed 's/.*load/load/'; }
pk_train() {  # label binary shape model-args
  "$2" bench --shapes "$3" $4 --methods lora --steps 3 --warmup 1 --no-inference --no-breakdown --json 2>/dev/null |
    python3 -c "import json,sys; t=json.load(sys.stdin)['shapes'][0]['train'][0]; print('PEFTKit $1 lora $3: median', round(t['medianMs']), 'ms,', round(t['tokensPerSecond'], 1), 'tok/s, peak', round(t['peakRSSMiB']), 'MiB')"
}
py_child() {  # label pythonpath job
  env OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 HF_HUB_OFFLINE=1 TRANSFORMERS_NO_ADVISORY_WARNINGS=1 \
      TOKENIZERS_PARALLELISM=false PYTHONPATH="$2" python3 scripts/bench_compare.py --child "$3" 2>/dev/null | grep RESULT |
    python3 -c "import json,sys; d=json.loads(sys.stdin.read()[7:]); print('$1', *(f'{k} {round(d[k], 2)}' for k in ('median_ms', 'tokens_per_second', 'prefill_tokens_per_second', 'decode_tokens_per_second', 'peak_rss_mib') if k in d))"
}
r=1
while [ $r -le "$ROUNDS" ]; do
  echo "== round $r, $(load)"
  for shape in gpt2 smollm2; do
    args=""; dir=null
    [ "$shape" = smollm2 ] && args="--model $HF" && dir="\"$HF\""
    for b in $BINS; do pk_train "${b%%=*}" "${b#*=}" $shape "$args"; done
    py_child "PyTorch+PEFT lora $shape:" "$PYDEPS" "{\"job\":\"train\",\"shape\":\"$shape\",\"method\":\"lora\",\"model_dir\":$dir,\"batch\":4,\"seq\":256,\"warmup\":1,\"steps\":3,\"threads\":2}"
  done
  echo "-- decode, $(load)"
  for b in $BINS; do
    "${b#*=}" bench --shapes smollm2 --model "$HF" --methods none --gen-runs 2 --no-breakdown 2>/dev/null | grep "decode 64" | sed "s/^ */PEFTKit ${b%%=*}: /"
  done
  py_child "llama.cpp F32:" "$LLAMACPP:$PYDEPS" "{\"job\":\"llamacpp\",\"gguf\":\"$F32\",\"label\":\"F32 GGUF\",\"shape\":\"smollm2\",\"prompt_tokens\":256,\"new_tokens\":64,\"gen_runs\":2,\"threads\":2}"
  py_child "transformers:" "$PYDEPS" "{\"job\":\"hf_generate\",\"shape\":\"smollm2\",\"model_dir\":\"$HF\",\"prompt_tokens\":256,\"new_tokens\":64,\"gen_runs\":2,\"threads\":2}"
  r=$((r + 1))
done
echo "== end, $(load)"
