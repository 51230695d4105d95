"""Per-call overhead of the Python package over C, on small calls.

Compiles forward_overhead.c against the libpeftkit.so that `peftkit` loaded, runs it, then times the
same calls from Python on the same model (tiny default GPT-2, input 1x8, 1 thread):

  forward_1x8    Model.forward(ids)              allocates the [1, 8, 256] result
                 Model.forward(ids, out=buf)     writes into a reused buffer
                 raw ctypes peftkit_forward      prebuilt arguments: the cost of ctypes alone
  set_active     Model.set_active_adapter("a")   a call with almost no work: the fixed cost
                 raw ctypes peftkit_adapter_set_active

Each sample times a batch of calls and divides; the table shows the median (10th .. 90th percentile)
microseconds per call, on the wall clock and on this thread's CPU clock (which leaves out time lost to
other processes), best median of ROUNDS rounds that alternate C and Python.

With --instructions, each case instead runs once under valgrind's callgrind, which counts only the
instructions of a loop of N calls (N = 200 forwards or 10000 set-actives by default; warm-up and
start-up are outside the counted region), / N: instructions per call: a count that does not depend on how
busy the machine is (callgrind's CPU model, so OpenBLAS may pick other kernels than natively).

Usage: python3 bindings/python/bench/forward_overhead.py [SAMPLES] [ROUNDS]
       python3 bindings/python/bench/forward_overhead.py --instructions [N]
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
BATCH = {"forward_1x8": 20, "set_active": 1000}


def build_c(out_dir: Path, *defines: str) -> Path:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("clang")
    lib_dir = str(Path(peftkit.library_path).resolve().parent)
    exe = out_dir / "forward_overhead"
    subprocess.run([cc, "-std=c11", "-O2", "-Wall", "-Werror", f"-I{REPO / 'include'}", *defines,
                    str(HERE / "forward_overhead.c"),
                    "-o", str(exe), f"-L{lib_dir}", "-lpeftkit", f"-Wl,-rpath,{lib_dir}"], check=True)
    return exe


def run_c(exe: Path, samples: int) -> dict:
    out = subprocess.run([str(exe), str(samples)], check=True, capture_output=True, text=True).stdout
    res = {}
    for line in out.splitlines():
        case, clock, *vals = line.split()
        res[(f"{case} from C", clock)] = tuple(map(float, vals))
    return res


def timed(name: str, case: str, fn, samples: int) -> dict:
    k = BATCH[case]
    for _ in range(200 if k < 100 else 2000):
        fn()
    wall, cpu = [], []
    wclock, cclock = time.perf_counter_ns, time.thread_time_ns
    for _ in range(samples):
        w0, c0 = wclock(), cclock()
        for _ in range(k):
            fn()
        c1, w1 = cclock(), wclock()
        wall.append((w1 - w0) / k / 1e3)
        cpu.append((c1 - c0) / k / 1e3)
    out = {}
    for clock, t in (("wall", wall), ("cpu", cpu)):
        t.sort()
        out[(f"{case} {name}", clock)] = (t[samples // 2], t[samples // 10], t[samples - 1 - samples // 10])
    return out


def run_python(samples: int) -> dict:
    peftkit.set_num_threads(1)
    m = peftkit.Model.create(seed=1)
    ids = np.arange(1, 9, dtype=np.int32)[None, :]
    buf = np.empty((1, 8, 256), dtype=np.float32)
    lib = _capi.lib
    h, ids_p, buf_p = m._handle, ids.ctypes.data, buf.ctypes.data
    res = {}
    res.update(timed("Model.forward(ids)", "forward_1x8", lambda: m.forward(ids), samples))
    res.update(timed("Model.forward(ids, out=buf)", "forward_1x8", lambda: m.forward(ids, out=buf), samples))
    res.update(timed("raw ctypes", "forward_1x8",
                     lambda: lib.peftkit_forward(h, ids_p, None, 1, 8, buf_p, 2048, None, None), samples))
    m.attach_adapter("a")
    res.update(timed('Model.set_active_adapter("a")', "set_active", lambda: m.set_active_adapter("a"), samples))
    res.update(timed("raw ctypes", "set_active", lambda: lib.peftkit_adapter_set_active(h, b"a"), samples))
    m.close()
    return res


PY_CASES = {
    "forward_1x8": [("Model.forward(ids)", "forward"), ("Model.forward(ids, out=buf)", "forward_out"),
                    ("raw ctypes", "raw_forward")],
    "set_active": [('Model.set_active_adapter("a")', "set_active"), ("raw ctypes", "raw_set_active")],
}


REGION_C = """
#include <valgrind/callgrind.h>
/* Counts the instructions of body() only (callgrind client requests; no-ops outside valgrind). */
void bench_region(void (*body)(void)) {
    CALLGRIND_TOGGLE_COLLECT;
    body();
    CALLGRIND_TOGGLE_COLLECT;
}
"""


def run_count(mode: str, n: int, region_lib: str) -> None:
    """N calls of one case inside bench_region() of `region_lib`, after 10 uncounted warm-up calls."""
    peftkit.set_num_threads(1)
    m = peftkit.Model.create(seed=1)
    m.attach_adapter("a")
    ids = np.arange(1, 9, dtype=np.int32)[None, :]
    buf = np.empty((1, 8, 256), dtype=np.float32)
    lib, h, ids_p, buf_p = _capi.lib, m._handle, ids.ctypes.data, buf.ctypes.data
    fn = {
        "loop": lambda: None,
        "forward": lambda: m.forward(ids),
        "forward_out": lambda: m.forward(ids, out=buf),
        "raw_forward": lambda: lib.peftkit_forward(h, ids_p, None, 1, 8, buf_p, 2048, None, None),
        "set_active": lambda: m.set_active_adapter("a"),
        "raw_set_active": lambda: lib.peftkit_adapter_set_active(h, b"a"),
    }[mode]
    for _ in range(10):
        fn()

    def body() -> None:
        for _ in range(n):
            fn()

    region = ctypes.CDLL(region_lib)
    callback = ctypes.CFUNCTYPE(None)(body)
    region.bench_region(callback)
    m.close()


def collected(cmd: list) -> int:
    """Instructions callgrind counts inside bench_region() while running `cmd`."""
    env = dict(os.environ, PYTHONMALLOC="malloc", PYTHONHASHSEED="0")
    r = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", "--collect-atstart=no"]
                       + cmd, capture_output=True, text=True, env=env, check=True)
    return int(r.stderr.split("Collected :")[1].split()[0].replace(",", ""))


def main_instructions(n_forward: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        exe = build_c(Path(tmp), "-DPEFTKIT_BENCH_CALLGRIND")
        region = Path(tmp) / "region.so"
        (Path(tmp) / "region.c").write_text(REGION_C)
        cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("clang")
        subprocess.run([cc, "-O2", "-shared", "-fPIC", str(Path(tmp) / "region.c"), "-o", str(region)], check=True)
        print(f"libpeftkit {peftkit.library_version()}; Python {sys.version.split()[0]}, numpy {np.__version__}; "
              "instructions per call counted by callgrind inside the measured loop")
        py = [sys.executable, __file__, "--count"]
        for case, c_mode, n in (("forward_1x8", "forward", n_forward), ("set_active", "set_active", 50 * n_forward)):
            base = collected([str(exe), "count", c_mode, str(n)]) / n
            loop = collected(py + ["loop", str(n), str(region)]) / n
            print(f"  {case} (N = {n} calls)")
            print(f"    {'from C':40s} {base:12,.0f}")
            print(f"    {'Python loop + lambda, no call (baseline)':40s} {loop:12,.0f}")
            for name, mode in PY_CASES[case]:
                v = collected(py + [mode, str(n), str(region)]) / n
                print(f"    {name:40s} {v:12,.0f}   {v - base:+,.0f} vs C   ({v - loop - base:+,.0f} without the loop)")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--count":
        run_count(sys.argv[2], int(sys.argv[3]), sys.argv[4])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--instructions":
        main_instructions(int(sys.argv[2]) if len(sys.argv) > 2 else 200)
        return
    samples = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        exe = build_c(Path(tmp))
        for _ in range(rounds):
            runs.append(run_c(exe, samples))
            runs.append(run_python(samples))
    best = {}
    for r in runs:
        for key, v in r.items():
            if key not in best or v[0] < best[key][0]:
                best[key] = v
    print(f"libpeftkit {peftkit.library_version()} from {peftkit.library_path}")
    print(f"Python {sys.version.split()[0]}, numpy {np.__version__}; {samples} samples x {rounds} rounds; "
          "microseconds per call, median (p10 .. p90)")
    for clock in ("wall", "cpu"):
        print(f"{clock} clock:")
        for case in BATCH:
            base = best[(f"{case} from C", clock)][0]
            for (name, c), v in best.items():
                if c == clock and name.startswith(case):
                    extra = "" if name.endswith("from C") else f"   {v[0] - base:+.2f} vs C"
                    print(f"  {name:45s} {v[0]:8.2f} ({v[1]:.2f} .. {v[2]:.2f}){extra}")


if __name__ == "__main__":
    main()
