#!/usr/bin/env python3
"""Checks that the folders of Sources/PEFTKit depend on each other without loops.

A folder depends on another when one of its Swift files names a type, function, global or extension member
declared in the other (found by scanning declarations and identifiers; comments and string literals are
skipped). Prints the graph and exits 1 if it has a cycle, naming one. Run from anywhere:

    python3 scripts/check_layers.py            # the graph, and "no cycles" or the cycle
    python3 scripts/check_layers.py --dot      # the graph in Graphviz dot
"""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Sources", "PEFTKit")

DECL = re.compile(
    r"^\s*(?:@\w+(?:\([^)]*\))?\s+)*(?:(?:public|internal|private|fileprivate|final|static|override|"
    r"nonisolated\(unsafe\)|nonisolated|mutating|indirect|convenience|required|@inline\(__always\)|"
    r"@discardableResult)\s+)*"
    r"(?:class|struct|enum|protocol|func|let|var|typealias)\s+([A-Za-z_][A-Za-z0-9_]*)")
IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Names too generic to attribute to one folder (members every type has, common locals).
IGNORE = {"init", "config", "count", "data", "name", "shape", "model", "value", "values", "path", "file", "p", "c",
          "i", "n", "s", "t", "x", "a", "b", "m", "v", "w", "k", "out", "inp", "rows", "cols", "step", "source",
          "params", "grads", "result", "error", "message", "body", "first", "last", "index", "layers", "description",
          "next", "size", "offset", "base", "key", "keys", "kind", "method", "type", "isEmpty", "storage", "tokens",
          "weights", "bias", "weight", "scale", "seed", "id", "ids", "text", "bytes", "string", "object", "floats",
          "encode", "decode", "validate", "forward", "backward", "update", "run", "apply", "make", "parse", "read",
          "write", "load", "save", "close", "open", "reset", "state", "options", "flags", "label", "labels"}


def strip(src: str) -> str:
    """Source without comments and string literals (good enough for Swift as this project writes it)."""
    src = re.sub(r'"""[\s\S]*?"""', '""', src)
    src = re.sub(r"/\*[\s\S]*?\*/", "", src)
    out = []
    for line in src.split("\n"):
        line = re.sub(r'"(?:\\.|[^"\\])*"', '""', line)
        line = re.sub(r"//.*", "", line)
        out.append(line)
    return "\n".join(out)


def folders():
    result = {}
    for d in sorted(os.listdir(ROOT)):
        full = os.path.join(ROOT, d)
        if os.path.isdir(full):
            files = []
            for dirpath, _, names in os.walk(full):
                files += [os.path.join(dirpath, f) for f in names if f.endswith(".swift")]
            result[d] = {f: strip(open(f, encoding="utf-8").read()) for f in sorted(files)}
    return result


def main():
    tree = folders()
    owner = {}
    for folder, files in tree.items():
        for src in files.values():
            for line in src.split("\n"):
                m = DECL.match(line)
                # Declarations at indent 0 (types, functions, globals) and types nested at indent 4. Members of
                # types and extensions are not counted: their names repeat across folders (forward, encode, ...),
                # and a use of one comes with a use of its type.
                indent = len(line) - len(line.lstrip())
                kind = re.search(r"\b(class|struct|enum|protocol|func|let|var|typealias)\s", line)
                member_ok = kind is not None and kind.group(1) in ("class", "struct", "enum", "protocol", "typealias")
                if m and (indent == 0 or (indent == 4 and member_ok)) and m.group(1) not in IGNORE:
                    owner.setdefault(m.group(1), set()).add(folder)
    ambiguous = {k for k, v in owner.items() if len(v) > 1}
    edges = {f: {} for f in tree}
    for folder, files in tree.items():
        for path, src in files.items():
            for ident in set(IDENT.findall(src)):
                if ident in ambiguous or ident not in owner:
                    continue
                (other,) = owner[ident]
                if other != folder:
                    edges[folder].setdefault(other, set()).add((ident, os.path.relpath(path, ROOT)))
    if "--dot" in sys.argv:
        print("digraph peftkit {")
        for a, targets in edges.items():
            for b in targets:
                print(f'  "{a}" -> "{b}";')
        print("}")
        return 0
    verbose = "-v" in sys.argv
    for a in sorted(edges):
        print(f"{a} -> {', '.join(sorted(edges[a])) or '(nothing)'}")
        if verbose:
            for b in sorted(edges[a]):
                print(f"    {b}: " + ", ".join(sorted({i for i, _ in edges[a][b]})[:8]))
    # Cycle search (DFS).
    color, stack = {}, []

    def visit(node):
        color[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if color.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in color:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        color[node] = 2
        return None

    for node in sorted(edges):
        if node not in color:
            cycle = visit(node)
            if cycle:
                print("cycle: " + " -> ".join(cycle))
                for a, b in zip(cycle, cycle[1:]):
                    uses = sorted(edges[a][b])[:4]
                    print(f"  {a} uses {b}: " + ", ".join(f"{i} ({p})" for i, p in uses))
                return 1
    print("no cycles")
    return 0


if __name__ == "__main__":
    sys.exit(main())
