"""The dependency floor: networks/, transforms/ and the bundle runtime import nothing from naslung.pipeline, and the
one error hierarchy is shared by every layer."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import naslung.bundles.runtime
import naslung.networks
import naslung.transforms
from naslung.networks import errors as floor_errors
from naslung.pipeline import errors as pipeline_errors

#: The packages below the pipeline, as (dotted name, source folder).
FLOOR_PACKAGES = [
    ("naslung.networks", Path(naslung.networks.__file__).parent),
    ("naslung.transforms", Path(naslung.transforms.__file__).parent),
    ("naslung.bundles.runtime", Path(naslung.bundles.runtime.__file__).parent),
]


def _module_name(package: str, folder: Path, path: Path) -> str:
    parts = [*package.split("."), *path.relative_to(folder).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(module: str, path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth (function-local imports too), relative ones resolved."""
    is_package = path.name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _floor_graph() -> dict[str, set[str]]:
    """``{module: naslung modules it imports}`` for every module of the floor packages."""
    graph = {}
    for package, folder in FLOOR_PACKAGES:
        for path in sorted(folder.rglob("*.py")):
            module = _module_name(package, folder, path)
            graph[module] = {name for name in _imports(module, path) if name.split(".")[0] == "naslung"}
    return graph


def test_floor_modules_import_nothing_from_the_pipeline():
    graph = _floor_graph()
    assert len(graph) > 20  # the walk found the modules
    offending = {
        module: sorted(n for n in names if n.startswith("naslung.pipeline")) for module, names in graph.items()
    }
    assert {m: names for m, names in offending.items() if names} == {}


@pytest.mark.parametrize("name", ["NaslungError", "DataError", "ConfigError", "SearchError"])
def test_one_error_hierarchy(name):
    """pipeline.errors re-exports the floor's classes: the same objects, so except clauses catch across layers."""
    assert getattr(pipeline_errors, name) is getattr(floor_errors, name)
    assert issubclass(getattr(floor_errors, name), floor_errors.NaslungError)


def test_floor_error_is_caught_as_the_pipeline_error():
    from naslung.networks import ArchSpec

    with pytest.raises(pipeline_errors.ConfigError, match="architecture spec"):
        ArchSpec.parse("[4,4]")
