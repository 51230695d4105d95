#!/usr/bin/env python3
"""Forward pass of one long row on SmolLM2-135M (Q4_1 GGUF): every position's logits against the last position's
only (the LM head then runs on one row) and against per-token log-probabilities without logits, side by side in
one run. Prints median times over REPEATS and the bytes of logits returned.

    PEFTKIT_LIBRARY=$PWD/.build/release/libpeftkit.so PEFTKIT_SMOLLM2_GGUF=/path/SmolLM2-135M-Instruct.Q4_1.gguf \\
        python3 scripts/bench_forward_outputs.py [SEQ_LEN]
"""
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bindings" / "python" / "src"))
import peftkit  # noqa: E402

REPEATS = 5
seq = int(sys.argv[1]) if len(sys.argv) > 1 else 512
path = os.environ["PEFTKIT_SMOLLM2_GGUF"]
with peftkit.Model.load(path) as m:
    ids = np.random.default_rng(0).integers(0, m.config.vocab_size, (1, seq)).astype(np.int32)
    cases = {
        'forward(ids)                       all logits': lambda: m.forward(ids),
        'forward(ids, logits="last", return_loss=False)': lambda: m.forward(ids, logits="last", return_loss=False),
        'forward(ids, logits="last") (with loss)     ': lambda: m.forward(ids, logits="last"),
        'forward(ids, logits="none", return_logprobs=True)': lambda: m.forward(ids, logits="none", return_logprobs=True),
    }
    times = {k: [] for k in cases}
    sizes = {}
    for _ in range(REPEATS):  # interleaved, so drift hits every case alike
        for k, f in cases.items():
            t0 = time.perf_counter()
            out = f()
            times[k].append(time.perf_counter() - t0)
            lg = out if isinstance(out, np.ndarray) else out.logits
            sizes[k] = 0 if lg is None else lg.nbytes
    print(f"SmolLM2-135M Q4_1, batch 1, seq {seq}, median of {REPEATS}")
    for k in cases:
        print(f"  {k}: {statistics.median(times[k]) * 1e3:8.1f} ms, logits {sizes[k] / 1e6:8.2f} MB")
