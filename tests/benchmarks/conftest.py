"""Fixtures of the benchmark tests: the ``benchmarks/`` folder and its scripts loaded as modules (it is no package)."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS_DIR = Path(__file__).resolve().parents[2] / "benchmarks"


def _load_benchmark(name: str) -> ModuleType:
    """Import ``benchmarks/<name>.py`` as the module ``naslung_benchmarks_<name>``."""
    spec = importlib.util.spec_from_file_location(f"naslung_benchmarks_{name}", BENCHMARKS_DIR / f"{name}.py")
    assert spec is not None and spec.loader is not None, f"no benchmark script {BENCHMARKS_DIR / name}.py"
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def benchmarks_dir() -> Path:
    """The repository's ``benchmarks/`` folder."""
    return BENCHMARKS_DIR


@pytest.fixture
def load_benchmark() -> Callable[[str], ModuleType]:
    """The function ``load_benchmark(name) -> module`` that imports ``benchmarks/<name>.py`` afresh."""
    return _load_benchmark
