"""Build hook of the peftkit package: puts libpeftkit.so inside the package.

The library comes from, in order:
  1. $PEFTKIT_LIBRARY (a libpeftkit.so, or a folder holding one): copied as is, nothing is built;
  2. `swift build -c release --product peftkit` in the PEFTKit repository this folder belongs to
     (incremental: nearly instant when the library is already built);
  3. an existing <repo>/.build/release/libpeftkit.so, when no `swift` is on PATH.
Editable installs (`pip install -e`) build but copy nothing: the package then loads the repository's
build (or $PEFTKIT_LIBRARY at run time).
Everything else is in pyproject.toml.
"""

import os
import shutil
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
LIB = "libpeftkit.so"


def _from_env():
    env = os.environ.get("PEFTKIT_LIBRARY")
    if not env:
        return None
    p = Path(env).expanduser()
    if p.is_dir():
        p = p / LIB
    if not p.is_file():
        raise SystemExit(f"PEFTKIT_LIBRARY={env}: no such file")
    return p


def _in_repo():
    return (REPO / "Package.swift").is_file() and (REPO / "include" / "peftkit.h").is_file()


def _swift_build(swift):
    cmd = [swift, "build", "-c", "release", "--package-path", str(REPO), "--product", "peftkit"]
    print("peftkit: building libpeftkit.so:", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    bin_dir = subprocess.run(cmd[:-2] + ["--show-bin-path"], check=True, capture_output=True,
                             text=True).stdout.strip()
    return Path(bin_dir) / LIB


def find_or_build_library():
    lib = _from_env()
    if lib is not None:
        print(f"peftkit: using PEFTKIT_LIBRARY={lib}", flush=True)
        return lib
    if not _in_repo():
        raise SystemExit(
            f"peftkit: {REPO} is not a PEFTKit repository; set PEFTKIT_LIBRARY to a built libpeftkit.so")
    swift = shutil.which("swift")
    if swift:
        return _swift_build(swift)
    prebuilt = REPO / ".build" / "release" / LIB
    if prebuilt.is_file():
        print(f"peftkit: no swift on PATH, using the existing {prebuilt}", flush=True)
        return prebuilt
    raise SystemExit(
        "peftkit: libpeftkit.so is not built and no `swift` is on PATH. Install Swift 6.3 and OpenBLAS "
        "(apt-get install libopenblas-dev pkg-config), or set PEFTKIT_LIBRARY to a built libpeftkit.so.")


class BuildWithLibrary(build_py):
    def run(self):
        super().run()
        if self.dry_run:
            return
        lib = find_or_build_library()
        if getattr(self, "editable_mode", False):
            return  # the package is used in place and loads the repository's build
        dest = Path(self.build_lib) / "peftkit" / LIB
        dest.parent.mkdir(parents=True, exist_ok=True)
        self.copy_file(str(lib), str(dest), preserve_mode=True)

    def get_outputs(self, include_bytecode=True):
        outputs = super().get_outputs(include_bytecode)
        if not getattr(self, "editable_mode", False):
            outputs.append(str(Path(self.build_lib) / "peftkit" / LIB))
        return outputs


class BinaryDistribution(Distribution):
    """The wheel holds a native library, so it is platform-specific (installed into platlib)."""

    def has_ext_modules(self):
        return True


setup(cmdclass={"build_py": BuildWithLibrary}, distclass=BinaryDistribution)
