#!/usr/bin/env python3
"""Greedy generation on the same GGUF file: PEFTKit (quantized base, and widened) against llama.cpp's
llama-completion (temperature 0). Prints, per prompt, how many of the N new tokens agree position by position
and where the first difference is.

    bash scripts/build_llamacpp.sh                    # prints the llama.cpp bin dir
    PEFTKIT_LIBRARY=.build/release/libpeftkit.so python3 scripts/compare_llamacpp_greedy.py [model.gguf] [-n 40]

llama.cpp's text is tokenized back with the model's tokenizer (prompt + continuation, prompt tokens removed).
"""
import argparse
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "bindings", "python", "src"))
import peftkit  # noqa: E402

PROMPTS = [
    "The capital of France is",
    "Once upon a time, in a small village,",
    "def fibonacci(n):",
    "The three primary colors are",
]


def llamacpp_bin():
    out = subprocess.run(["bash", os.path.join(os.path.dirname(__file__), "build_llamacpp.sh")],
                         capture_output=True, text=True, check=True).stdout.strip().splitlines()
    return out[-1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model", nargs="?", default=os.environ.get("PEFTKIT_SMOLLM2_GGUF"))
    ap.add_argument("-n", type=int, default=40)
    ap.add_argument("-t", type=int, default=2)
    a = ap.parse_args()
    exe = os.path.join(llamacpp_bin(), "llama-completion")
    q = peftkit.Model.load(a.model)
    w = peftkit.Model.load(a.model, widen=True)
    for prompt in PROMPTS:
        ids = q.tokenize(prompt)
        r = subprocess.run([exe, "-m", a.model, "-p", prompt, "-n", str(a.n), "--temp", "0", "--top-k", "1",
                            "-no-cnv", "--ignore-eos", "--no-display-prompt", "-t", str(a.t), "--no-warmup",
                            "--seed", "1"], capture_output=True, text=True, stdin=subprocess.DEVNULL)
        text = r.stdout
        ll = list(q.tokenize(prompt + text)[len(ids):])[:a.n]
        for label, m in (("quantized", q), ("widened", w)):
            pk = list(m.generate(ids, max_new_tokens=a.n))
            same = sum(x == y for x, y in zip(pk, ll))
            first = next((i for i, (x, y) in enumerate(zip(pk, ll)) if x != y), None)
            gap = ""
            if first is not None:
                import numpy as np
                ctx = np.array([list(ids) + pk[:first]], dtype=np.int32)
                logits = np.asarray(w.forward(ctx))[0, -1]  # the widened model's fp32 logits at the split
                gap = f" (fp32 logit gap between the two choices {logits[pk[first]] - logits[ll[first]]:.3f})"
            print(f"{label:9s} {prompt!r}: {same}/{a.n} tokens agree with llama.cpp"
                  + ("" if first is None else f"; first difference at {first}: "
                     f"peftkit {q.detokenize(pk[first:first + 3])!r} vs llama.cpp {q.detokenize(ll[first:first + 3])!r}{gap}"))
        print(f"          llama.cpp: {text[:120]!r}")


if __name__ == "__main__":
    main()
