"""The dependency floor: networks/, transforms/ and the bundle runtime import nothing from naslung.pipeline, and the
one error hierarchy is shared by every layer."""

from __future__ import annotations

from pathlib import Path

import pytest
from import_graph import imported_names, module_files

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


def _floor_graph() -> dict[str, set[str]]:
    """``{module: naslung modules it imports}`` for every module of the floor packages."""
    return {
        module: {name for name in imported_names(module, path) if name.split(".")[0] == "naslung"}
        for module, path in module_files(FLOOR_PACKAGES).items()
    }


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
