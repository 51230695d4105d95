#!/usr/bin/env python3
"""Writes data/demo/{train,test}.jsonl for `peftkit demo`: pull a person, a city and the decade of a year
out of a sentence into one fixed JSON line (1995 -> "1990s"). Held-out records use names, cities and two sentence shapes that never
occur in training, so a high test score means the adapter learnt the format, not the answers.
Deterministic: rerunning rewrites the same files."""
import json
import os
import random

INSTRUCTION = "Extract the person, city and decade as JSON: "

# Many different names and cities, each in few records: the adapter has to learn to copy them, not to
# recall them.
TRAIN_NAMES = ["Marie", "Tomas", "Aiko", "Lena", "Omar", "Priya", "Jonas", "Chloe", "Mateo", "Sofia",
               "Ravi", "Hannah", "Kwame", "Elena", "Lucas", "Yara", "Felix", "Nora", "Diego", "Ingrid",
               "Samir", "Clara", "Viktor", "Amara", "Leo", "Greta", "Hugo", "Mei", "Oskar", "Zara",
               "Ines", "Kofi", "Lotte", "Arjun", "Beatriz", "Emil", "Farah", "Goran", "Hiroshi", "Ilse",
               "Jakub", "Kenji", "Liam", "Mira", "Nadia", "Otto", "Paula", "Rashid", "Selma", "Timo",
               "Ulla", "Vera", "Wanda", "Xavier", "Yusuf", "Zofia", "Anouk", "Bilal", "Dalia", "Erik"]
TEST_NAMES = ["Astrid", "Bruno", "Keiko", "Malik", "Rosa", "Anton", "Leila", "Pavel"]
TRAIN_CITIES = ["Lyon", "Porto", "Osaka", "Dublin", "Cairo", "Quito", "Bergen", "Krakow", "Seville", "Hanoi",
                "Leeds", "Turin", "Perth", "Lagos", "Riga", "Graz", "Malmo", "Tunis", "Cusco", "Split",
                "Basel", "Cork", "Delft", "Fez", "Genoa", "Hull", "Izmir", "Kobe", "Lille", "Minsk",
                "Nice", "Oslo", "Pune", "Rouen", "Sendai", "Tampere", "Utrecht", "Varna", "Wroclaw", "Zagreb"]
TEST_CITIES = ["Ghent", "Bilbao", "Kyoto", "Tartu", "Nantes", "Accra", "Oulu", "Brno"]

TRAIN_SHAPES = [
    "{name} moved to {city} in {year}.",
    "In {year}, {name} opened a small bakery in {city}.",
    "{name} was born in {city} in {year}.",
    "Back in {year}, {name} started a new job in {city}.",
    "{name} visited {city} for the first time in {year}.",
    "The year was {year} when {name} arrived in {city}.",
]
TEST_SHAPES = TRAIN_SHAPES + [
    "{name} spent the whole summer of {year} in {city}.",
    "After {year}, {name} never went back to {city}.",
]


def record(rng, names, cities, shapes, name=None):
    name, city, year = name or rng.choice(names), rng.choice(cities), rng.randint(1950, 2023)
    sentence = rng.choice(shapes).format(name=name, city=city, year=year)
    answer = json.dumps({"name": name, "city": city, "decade": f"{year // 10 * 10}s"})
    return {"prompt": INSTRUCTION + sentence, "response": answer}


def main():
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "demo")
    rng = random.Random(5)
    names = TRAIN_NAMES[:]
    rng.shuffle(names)
    train = [record(rng, TRAIN_NAMES, TRAIN_CITIES, TRAIN_SHAPES, name=names[i % len(names)]) for i in range(64)]
    test = []
    for i in range(8):
        # Each held-out record gets its own name; the last two use the unseen sentence shapes.
        r = record(random.Random(100 + i), [TEST_NAMES[i]], TEST_CITIES, TEST_SHAPES[-2:] if i >= 6 else TRAIN_SHAPES)
        test.append(r)
    for name, rows in [("train.jsonl", train), ("test.jsonl", test)]:
        with open(os.path.join(root, name), "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
