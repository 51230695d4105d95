"""Reads include/peftkit.h for the tests that keep the ctypes mirror in step with it: its #define
constants (from the text), and its functions and struct fields (from the C preprocessor's output, so
that comments and conditionals are already gone)."""

import os
import re
import shutil
import subprocess
from functools import cache

from conftest import HEADER, REPO


def c_compiler() -> str:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("clang") or shutil.which("gcc")
    if not cc:
        raise RuntimeError("no C compiler (cc, clang or gcc) on PATH and CC is not set")
    return cc


def defines() -> dict[str, str]:
    """#define NAME VALUE lines of the header (values as written)."""
    out = {}
    for m in re.finditer(r"^#define\s+(PEFTKIT_\w+)\s+(.+?)\s*$", HEADER.read_text(), re.M):
        out[m.group(1)] = m.group(2)
    return out


def int_constants() -> dict[str, int]:
    """The header's integer constants: `#define X 3` and `#define X (-3)`."""
    out = {}
    for name, value in defines().items():
        m = re.fullmatch(r"\(?\s*(-?\d+)\s*\)?", value)
        if m:
            out[name] = int(m.group(1))
    return out


@cache
def preprocessed() -> str:
    text = subprocess.run([c_compiler(), "-E", "-P", "-x", "c", str(HEADER)], check=True,
                          capture_output=True, text=True, cwd=REPO).stdout
    return re.sub(r"\s+", " ", text)


def _split_param(p: str) -> tuple[str, str]:
    """'const char *name' -> ('const char *', 'name')."""
    p = p.strip()
    m = re.fullmatch(r"(.*?[\s\*])(\w+)", p)
    assert m, f"cannot parse parameter {p!r}"
    return re.sub(r"\s+", " ", m.group(1).replace("*", " * ")).strip(), m.group(2)


def functions() -> dict[str, tuple[str, list[str]]]:
    """name -> (return type, [parameter types]) for every function the header declares."""
    out = {}
    for m in re.finditer(r"(?:(?<=[;}])|^)\s*([\w\s\*]+?)\s*\b(peftkit_\w+)\s*\(([^()]*)\)\s*;", preprocessed()):
        ret, name, params = m.group(1), m.group(2), m.group(3).strip()
        ret = re.sub(r"\s+", " ", ret.replace("*", " * ")).strip()
        if ret.startswith("typedef"):
            continue
        types = [] if params in ("", "void") else [_split_param(p)[0] for p in params.split(",")]
        out[name] = (ret, types)
    return out


def callback_typedef(name: str) -> tuple[str, list[str]]:
    m = re.search(r"typedef\s+([\w\s\*]+?)\s*\(\s*\*\s*" + name + r"\s*\)\s*\(([^()]*)\)\s*;", preprocessed())
    assert m, f"no typedef {name} in the header"
    return m.group(1).strip(), [_split_param(p)[0] for p in m.group(2).split(",")]


def structs() -> dict[str, list[tuple[str, str]]]:
    """struct name -> [(field type, field name)] in declaration order, for each `typedef struct X {...} X;`."""
    out = {}
    for m in re.finditer(r"typedef struct (peftkit_\w+)\s*\{(.*?)\}\s*\1\s*;", preprocessed()):
        fields = [_split_param(d) for d in m.group(2).split(";") if d.strip()]
        out[m.group(1)] = fields
    return out
