#!/usr/bin/env python3
"""Trainable parameters and one train step's time per adapter method, at GPT-2-124M and SmolLM2-135M
shape (random weights), next to HF peft's counts for the same configs (Tests/Fixtures/peft/param_counts.json,
written by scripts/make_peft_fixtures.py with peft 0.18.1).

    swift build -c release --product peftkit
    PYTHONPATH=bindings/python/src PEFTKIT_LIBRARY=$PWD/.build/release/libpeftkit.so \\
        python3 scripts/method_costs.py [--batch 4 --seq-len 256 --steps 2 --threads 2]

The step time is the median of --steps steps after one warm-up step; it is a wall-clock figure on a
shared machine (see BENCHMARKS.md for the controlled comparison with PyTorch).
"""

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import peftkit

ROOT = Path(__file__).resolve().parent.parent

SHAPES = {
    "gpt2_124m": dict(architecture="gpt2", vocab_size=50257, hidden_size=768, num_layers=12, num_heads=12,
                      max_positions=1024),
    "smollm2_135m": dict(architecture="llama", vocab_size=49152, hidden_size=576, num_layers=30, num_heads=9,
                         num_kv_heads=3, intermediate_size=1536, max_positions=2048, rope_theta=100000.0,
                         norm_eps=1e-5),
}

CONFIGS = {
    "gpt2_124m": [
        ("lora_r8_c_attn", peftkit.LoRAConfig(r=8, target_modules=["c_attn"])),
        ("lora_r8_all_linears", peftkit.LoRAConfig(r=8, target_modules=["c_attn", "c_fc", "c_proj"])),
        ("ia3_defaults", peftkit.IA3Config()),
        ("prefix_20", peftkit.PrefixConfig(num_virtual_tokens=20)),
        ("prefix_20_projection", peftkit.PrefixConfig(num_virtual_tokens=20, prefix_projection=True, encoder_hidden_size=768)),
        ("prompt_20", peftkit.PromptConfig(num_virtual_tokens=20)),
        ("bottleneck_pfeiffer_rf16", peftkit.BottleneckConfig.seq_bn(reduction_factor=16)),
        ("bottleneck_houlsby_rf16", peftkit.BottleneckConfig.double_seq_bn(reduction_factor=16)),
    ],
    "smollm2_135m": [
        ("lora_r8_q_proj_v_proj", peftkit.LoRAConfig(r=8, target_modules=["q_proj", "v_proj"])),
        ("prefix_20", peftkit.PrefixConfig(num_virtual_tokens=20)),
        ("ia3_defaults", peftkit.IA3Config()),
        ("prompt_20", peftkit.PromptConfig(num_virtual_tokens=20)),
    ],
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--shape", choices=list(SHAPES), action="append")
    args = ap.parse_args()
    peftkit.set_num_threads(args.threads)
    peft_counts = json.loads((ROOT / "Tests/Fixtures/peft/param_counts.json").read_text())["counts"]
    rng = np.random.default_rng(0)
    print(f"load average {os.getloadavg()[0]:.1f}, {args.threads} threads, B={args.batch} T={args.seq_len}")
    print(f"{'shape':14} {'config':26} {'PEFTKit':>11} {'peft':>11} {'step ms':>9} {'tok/s':>7}")
    for shape in args.shape or list(SHAPES):
        with peftkit.Model.create(SHAPES[shape], seed=1) as m:
            ids = rng.integers(0, m.config.vocab_size, size=(args.batch, args.seq_len), dtype=np.int32)
            for label, cfg in CONFIGS[shape]:
                m.attach_adapter(label, cfg)
                m.set_active_adapter(label)
                n = m.adapter_num_params(label)
                theirs = peft_counts.get(shape, {}).get(label, {}).get("trainable")
                times = []
                for i in range(args.steps + 1):
                    t0 = time.perf_counter()
                    m.train_step(ids, learning_rate=1e-4)
                    if i:
                        times.append(time.perf_counter() - t0)
                ms = statistics.median(times) * 1e3
                tok = args.batch * args.seq_len / (ms / 1e3)
                mark = "" if theirs is None else (" =" if theirs == n else " !")
                peft_col = "-" if theirs is None else format(theirs, ",")
                print(f"{shape:14} {label:26} {n:>11,} {peft_col:>11}{mark} "
                      f"{ms:>9.0f} {tok:>7.0f}", flush=True)
                m.remove_adapter(label)
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
