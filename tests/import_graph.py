"""Walking the imports of naslung's own modules from their source (no import is executed): shared by the tests of
the dependency floor and of import cycles."""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import naslung.bundles.runtime
import naslung.networks
import naslung.pipeline
import naslung.transforms

__all__ = ["OUR_PACKAGES", "module_files", "imported_names"]

#: naslung's own packages, as (dotted name, source folder): the pipeline, networks, transforms and bundle runtime.
OUR_PACKAGES = [
    ("naslung.pipeline", Path(naslung.pipeline.__file__).parent),
    ("naslung.networks", Path(naslung.networks.__file__).parent),
    ("naslung.transforms", Path(naslung.transforms.__file__).parent),
    ("naslung.bundles.runtime", Path(naslung.bundles.runtime.__file__).parent),
]


def module_files(packages: Iterable[tuple[str, Path]]) -> dict[str, Path]:
    """``{dotted module name: source file}`` of every module under each ``(package name, source folder)``; a
    package is named by its ``__init__.py``."""
    found = {}
    for package, folder in packages:
        for path in sorted(folder.rglob("*.py")):
            parts = [*package.split("."), *path.relative_to(folder).with_suffix("").parts]
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imported_names(module: str, path: Path) -> set[str]:
    """Every dotted name ``module`` (source ``path``) imports, at any depth (function-local imports too), relative
    ones resolved: ``from pkg import name`` gives both ``pkg`` and ``pkg.name``."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
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
