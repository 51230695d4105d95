#!/usr/bin/env python3
"""Writes data/topics/{train,test}.jsonl: short sentences labelled with one of four topics (sport, cooking,
weather, computers), for `peftkit-cli demo bert` and `train --task classify`. Generated from templates and word
lists written for PEFTKit (no outside data; same license as the repository). Held-out rows use subjects,
verbs and sentence shapes that training never shows, so the task is not memorisable word by word.

    python3 scripts/make_topic_data.py
"""

import json
import os
import random

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "data", "topics")

WORDS = {
    "sport": {
        "train": (["the striker", "our goalkeeper", "the home team", "the coach", "a young sprinter", "the referee"],
                  ["scored late in the second half", "missed the penalty", "won the match on Sunday",
                   "trained hard before the final", "broke the national record"]),
        "test": (["the captain", "the visiting side", "a veteran defender", "the cyclist"],
                 ["lost in extra time", "took the gold medal", "was sent off after a foul", "finished the marathon"]),
    },
    "cooking": {
        "train": (["my grandmother", "the chef", "the bakery", "our neighbour", "the new restaurant", "the recipe"],
                  ["roasted the vegetables with garlic", "baked fresh bread this morning", "added too much salt to the soup",
                   "simmered the sauce for an hour", "served pasta with basil"]),
        "test": (["the pastry cook", "the food truck", "a home cook", "the kitchen staff"],
                 ["fried the onions until golden", "whisked eggs for the omelette", "grilled fish over charcoal",
                  "marinated the chicken overnight"]),
    },
    "weather": {
        "train": (["the forecast", "the afternoon", "the coast", "the valley", "last night", "the weekend"],
                  ["brought heavy rain and strong wind", "will be sunny and warm", "saw the first snow of winter",
                   "turned foggy and cold", "had thunderstorms after lunch"]),
        "test": (["the north of the country", "tomorrow morning", "the mountain pass", "the island"],
                 ["expects a heatwave", "was hit by a storm", "will stay cloudy with drizzle", "froze under clear skies"]),
    },
    "computers": {
        "train": (["the laptop", "our server", "the new phone", "the software update", "the database", "my keyboard"],
                  ["crashed after the update", "needs more memory", "runs the program much faster",
                   "lost its network connection", "installed a security patch"]),
        "test": (["the graphics card", "the operating system", "a web browser", "the cloud service"],
                 ["froze while compiling code", "was infected by a virus", "rebooted twice overnight",
                  "ran out of disk space"]),
    },
}
SHAPES = {
    "train": ["{s} {v}.", "Yesterday {s} {v}.", "I heard that {s} {v}."],
    "test": ["News: {s} {v}!", "Apparently {s} {v}, people say."],
}


def rows(split, n_per_topic, rng):
    out = []
    for topic, w in WORDS.items():
        subjects, verbs = w[split]
        combos = [(s, v, f) for s in subjects for v in verbs for f in SHAPES[split]]
        rng.shuffle(combos)
        for s, v, f in combos[:n_per_topic]:
            text = f.format(s=s, v=v)
            out.append({"text": text[0].upper() + text[1:], "label": topic})
    rng.shuffle(out)
    return out


def main():
    rng = random.Random(13)
    os.makedirs(OUT, exist_ok=True)
    for split, n in [("train", 48), ("test", 24)]:
        with open(os.path.join(OUT, f"{split}.jsonl"), "w") as f:
            for r in rows(split, n, rng):
                f.write(json.dumps(r) + "\n")
    print("wrote", OUT)


if __name__ == "__main__":
    main()
