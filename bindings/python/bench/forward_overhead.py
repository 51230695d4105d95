"""Per-call overhead of the Python package over C, on small calls.

Compiles forward_overhead.c against the libpeftkit.so that `peftkit` loaded, runs it, then times the
same calls from Python on the same model shape (tiny default GPT-2, input 1x8, 1 thread):

  forward_1x8    Model.forward(ids)              (allocates the [1, 8, 256] result)
                 Model.forward(ids, out=buf)     (reuses a buffer)
                 raw ctypes peftkit_forward      (prebuilt arguments: the cost of ctypes alone)
  adapter_count  len(Model.adapters)             vs raw ctypes peftkit_adapter_count

Prints the median (and 10th / 90th percentile) microseconds per call, the best of ROUNDS rounds
alternating C and Python.

Usage: python3 bindings/python/bench/forward_overhead.py [CALLS] [ROUNDS]
"""

import ctypes
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import peftkit
from peftkit import _capi

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]


def build_c(out_dir: Path) -> Path:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("clang")
    lib_dir = str(Path(peftkit.library_path).resolve().parent)
    exe = out_dir / "forward_overhead"
    subprocess.run([cc, "-std=c11", "-O2", "-Wall", "-Werror", f"-I{REPO / 'include'}",
                    str(HERE / "forward_overhead.c"),
                    "-o", str(exe), f"-L{lib_dir}", "-lpeftkit", f"-Wl,-rpath,{lib_dir}"], check=True)
    return exe


def run_c(exe: Path, calls: int) -> dict:
    out = subprocess.run([str(exe), str(calls)], check=True, capture_output=True, text=True).stdout
    return {name: tuple(map(float, rest)) for name, *rest in (line.split() for line in out.splitlines())}


def timed(fn, calls: int) -> tuple:
    for _ in range(calls // 10):
        fn()
    t = []
    clock = time.perf_counter_ns
    for _ in range(calls):
        t0 = clock()
        fn()
        t.append(clock() - t0)
    t.sort()
    us = [x / 1e3 for x in t]
    return us[calls // 2], us[calls // 10], us[calls - 1 - calls // 10]


def run_python(calls: int) -> dict:
    peftkit.set_num_threads(1)
    m = peftkit.Model.create(seed=1)
    ids = np.arange(1, 9, dtype=np.int32)[None, :]
    buf = np.empty((1, 8, 256), dtype=np.float32)
    lib = _capi.lib
    h, ids_p, buf_p = m._handle, ids.ctypes.data, buf.ctypes.data
    count = ctypes.c_int32()
    count_ref = ctypes.byref(count)
    res = {
        "forward_1x8 Model.forward(ids)": timed(lambda: m.forward(ids), calls),
        "forward_1x8 Model.forward(ids, out=buf)": timed(lambda: m.forward(ids, out=buf), calls),
        "forward_1x8 raw ctypes": timed(lambda: lib.peftkit_forward(h, ids_p, None, 1, 8, buf_p, 2048, None, None),
                                        calls),
        "adapter_count len(Model.adapters)": timed(lambda: len(m.adapters), calls),
        "adapter_count raw ctypes": timed(lambda: lib.peftkit_adapter_count(h, count_ref), calls),
    }
    m.close()
    return res


def main() -> None:
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    with tempfile.TemporaryDirectory() as tmp:
        exe = build_c(Path(tmp))
        c_runs, py_runs = [], []
        for _ in range(rounds):
            c_runs.append(run_c(exe, calls))
            py_runs.append(run_python(calls))
    best = lambda runs, k: min((r[k] for r in runs), key=lambda x: x[0])  # noqa: E731
    c = {k: best(c_runs, k) for k in c_runs[0]}
    py = {k: best(py_runs, k) for k in py_runs[0]}
    print(f"libpeftkit {peftkit.library_version()} from {peftkit.library_path}")
    print(f"Python {sys.version.split()[0]}, numpy {np.__version__}; {calls} calls x {rounds} rounds; "
          "microseconds per call: median (p10 .. p90)")
    for case in ("forward_1x8", "adapter_count"):
        base = c[case][0]
        print(f"  {case + ' from C':45s} {c[case][0]:8.2f} ({c[case][1]:.2f} .. {c[case][2]:.2f})")
        for k, v in py.items():
            if k.startswith(case):
                print(f"  {k:45s} {v[0]:8.2f} ({v[1]:.2f} .. {v[2]:.2f})   +{v[0] - base:.2f} over C")


if __name__ == "__main__":
    main()
