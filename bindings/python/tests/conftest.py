"""Shared fixtures of the peftkit test suite.

Tests import the installed `peftkit`; when none is importable they use the package source next to
them (bindings/python/src), which loads $PEFTKIT_LIBRARY or the repository's .build/release build.
"""

import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parents[2]
FIXTURES = REPO / "Tests" / "Fixtures"
HEADER = REPO / "include" / "peftkit.h"

try:
    import peftkit  # noqa: F401
except ImportError as e:
    if "libpeftkit" in str(e):
        raise
    sys.path.insert(0, str(TESTS.parent / "src"))
    import peftkit  # noqa: F401


def pytest_report_header(config):
    return [f"peftkit {peftkit.__version__} from {Path(peftkit.__file__).parent}",
            f"libpeftkit {peftkit.library_version()} from {peftkit.library_path}"]


@pytest.fixture
def model():
    """A fresh tiny random GPT-2 (vocab 256, hidden 64, 2 layers), closed after the test."""
    with peftkit.Model.create(seed=1) as m:
        yield m


@pytest.fixture
def trained_model(model):
    """`model` with an active adapter "task"."""
    model.attach_adapter("task")
    model.set_active_adapter("task")
    return model


BATCH = [[1, 2, 3, 4, 1, 2, 3, 4], [2, 3, 4, 1, 2, 3, 4, 1]]
