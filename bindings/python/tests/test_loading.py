"""Where libpeftkit.so is loaded from, and what happens when it cannot be."""

import os
import subprocess
import sys
from pathlib import Path

import peftkit
from peftkit import _capi

PKG_PARENT = str(Path(peftkit.__file__).resolve().parent.parent)


def run(code, **env):
    e = {k: v for k, v in os.environ.items() if k != "PEFTKIT_LIBRARY"}
    e["PYTHONPATH"] = PKG_PARENT
    e.update(env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=e)


def test_loaded_library_is_a_real_file():
    assert Path(peftkit.library_path).is_file()
    if os.environ.get("PEFTKIT_LIBRARY"):
        want = Path(os.environ["PEFTKIT_LIBRARY"])
        want = want / "libpeftkit.so" if want.is_dir() else want
        assert Path(peftkit.library_path).resolve() == want.resolve()


def test_env_var_overrides_and_accepts_a_folder():
    lib = Path(peftkit.library_path).resolve()
    for value in (str(lib), str(lib.parent)):
        r = run("import peftkit; print(peftkit.library_path)", PEFTKIT_LIBRARY=value)
        assert r.returncode == 0, r.stderr
        assert Path(r.stdout.strip()).resolve() == lib


def test_a_wrong_env_var_is_an_import_error_not_a_fallback(tmp_path):
    r = run("import peftkit", PEFTKIT_LIBRARY=str(tmp_path / "nope.so"))
    assert r.returncode != 0
    assert "LibraryLoadError" in r.stderr and "PEFTKIT_LIBRARY" in r.stderr and "nope.so" in r.stderr
    (tmp_path / "libpeftkit.so").write_text("not a shared library")
    r = run("import peftkit", PEFTKIT_LIBRARY=str(tmp_path))
    assert r.returncode != 0 and "PEFTKIT_LIBRARY" in r.stderr


def test_search_order_without_the_env_var(monkeypatch):
    monkeypatch.delenv("PEFTKIT_LIBRARY", raising=False)
    kinds = [k for k, _ in _capi.library_candidates()]
    assert kinds[0] == "package" and kinds[-1] == "dynamic loader"
    assert set(kinds) <= {"package", "repository build", "dynamic loader"}
    monkeypatch.setenv("PEFTKIT_LIBRARY", "/x/libpeftkit.so")
    assert _capi.library_candidates() == [("$PEFTKIT_LIBRARY", "/x/libpeftkit.so")]
