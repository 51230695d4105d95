#!/usr/bin/env python3
"""Writes a JSONL training set with long-tailed record lengths (many short records, a few long ones), the case
sequence packing is for: `peftkit-cli train --pack` against the same run without it (docs/BENCHMARKS.md).

    python3 scripts/make_longtail_data.py out.jsonl [--records 400] [--seed 0]

Deterministic for a seed. Lengths in words: 80% 8-40, 15% 40-120, 5% 150-320. Plain {"text": ...} records.
"""
import argparse
import json
import random

WORDS = ("the a of and to in is was for on that with as by at from it an be this are which or have one had "
         "not but what all were when we there can more if no out so said use each she how their time will way "
         "about many then them write would like these long make thing see him two has look day could people "
         "number water first been call who oil its now find down did get come made may part river city small "
         "bakery market train letter garden winter summer music paper window mountain harbour station").split()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--records", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    with open(a.out, "w", encoding="utf-8") as f:
        for _ in range(a.records):
            u = rng.random()
            n = rng.randint(8, 40) if u < 0.80 else rng.randint(40, 120) if u < 0.95 else rng.randint(150, 320)
            text = " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."
            f.write(json.dumps({"text": text}) + "\n")


if __name__ == "__main__":
    main()
