#!/usr/bin/env python3
"""Writes an older copy of peftkit.h: the same header with the last field of every struct removed, as a
program compiled against the previous layout of each struct would see it (test_versions.c is built with it).

    python3 make_older_header.py ../../include/peftkit.h build/older/peftkit.h
"""
import re
import sys

src, dst = sys.argv[1], sys.argv[2]
lines = open(src, encoding="utf-8").read().split("\n")
out: list[str] = []
i = 0
removed = []
while i < len(lines):
    line = lines[i]
    out.append(line)
    if re.match(r"typedef struct peftkit_\w+ \{$", line):
        body: list[str] = []
        i += 1
        while not lines[i].startswith("}"):
            body.append(lines[i])
            i += 1
        # The last field starts at the last line that declares one (4 spaces, a type, a name, ';').
        starts = [k for k, b in enumerate(body) if re.match(r"    [a-z_].*\b\w+;", b)]
        cut = starts[-1]
        removed.append(lines[i].strip("} ;") + "." + body[cut].split(";")[0].split()[-1].lstrip("*"))
        out.extend(body[:cut])
        out.append(lines[i])
    i += 1
open(dst, "w", encoding="utf-8").write("\n".join(out))
print("older header: removed", ", ".join(removed))
