#!/usr/bin/env python3
"""Writes a small demo preference dataset (JSONL) for `peftkit-cli train --objective dpo|orpo`.

    python3 scripts/make_pref_data.py --out prefs.jsonl [--pairs 64] [--chat] [--seed 0]

Each line is {"prompt": ..., "chosen": ..., "rejected": ...}: arithmetic questions whose chosen answer is right
and whose rejected answer is wrong by a small amount. With --chat the prompt is a messages list and the replies
are assistant messages (rendered by the model's chat template). Standard library only.
"""

import argparse
import json
import random


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--pairs", type=int, default=64)
    ap.add_argument("--chat", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    lines = []
    for _ in range(a.pairs):
        x, y = rng.randint(2, 49), rng.randint(2, 49)
        op = rng.choice("+-")
        right = x + y if op == "+" else x - y
        wrong = right + rng.choice([-3, -2, -1, 1, 2, 3])
        question = f"What is {x} {op} {y}?"
        chosen, rejected = f"{x} {op} {y} = {right}.", f"{x} {op} {y} = {wrong}."
        if a.chat:
            rec = {"prompt": [{"role": "system", "content": "Answer with the result."},
                              {"role": "user", "content": question}],
                   "chosen": {"role": "assistant", "content": chosen},
                   "rejected": {"role": "assistant", "content": rejected}}
        else:
            rec = {"prompt": question + "\n", "chosen": chosen, "rejected": rejected}
        lines.append(json.dumps(rec))
    with open(a.out + ".tmp", "w") as f:
        f.write("\n".join(lines) + "\n")
    import os
    os.replace(a.out + ".tmp", a.out)
    print(f"wrote {a.pairs} pairs to {a.out}")


if __name__ == "__main__":
    main()
