"""Import pylidc 0.2.3 on today's stack (no ``pkg_resources``, NumPy 2) and query its database eagerly.

pylidc 0.2.3 (the last release) was written for setuptools < 81 and NumPy < 1.24: its ``__init__`` runs
``pkg_resources.resource_filename('pylidc', 'pylidc.sqlite')`` and its mask/contour code calls ``np.int`` and
``np.float``. :func:`import_pylidc` patches exactly these gaps, and only when they are gaps, so nothing needs a
downgrade (the ``pkg_resources`` stand-in sits in ``sys.modules`` only while pylidc is imported).
:func:`eager_scan_query` loads scans with their annotations, contours and slice positions in a few
``SELECT ... IN`` statements instead of one lazy query per attribute access.
"""

from __future__ import annotations

import configparser
import contextlib
import importlib
import importlib.resources
import importlib.util
import logging
import sys
import types
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

__all__ = [
    "import_pylidc",
    "pkg_resources_shim",
    "install_numpy_aliases",
    "eager_scan_query",
    "PKG_RESOURCES_SHIM_FLAG",
]

logger = logging.getLogger(__name__)

#: Attribute set on the stand-in ``pkg_resources`` module so callers (and tests) can tell it from the real one.
PKG_RESOURCES_SHIM_FLAG = "__naslung_shim__"

#: NumPy aliases removed in NumPy 1.24/2.0 that pylidc 0.2.3 still calls, with the builtins they meant.
_NUMPY_ALIASES: dict[str, type] = {"int": int, "float": float}


def _resource_filename(package_or_requirement: Any, resource_name: str) -> str:
    """``pkg_resources.resource_filename`` for files inside an installed (unzipped) package, via importlib.

    Args:
        package_or_requirement: a package name (``"pylidc"``) or module object.
        resource_name: ``/``-separated path of the resource inside the package.

    Returns:
        the resource's path on disk as a string.
    """
    package = package_or_requirement if isinstance(package_or_requirement, str) else package_or_requirement.__name__
    resource = importlib.resources.files(package)
    for part in str(resource_name).split("/"):
        if part:
            resource = resource.joinpath(part)
    return str(resource)


@contextlib.contextmanager
def pkg_resources_shim() -> Iterator[bool]:
    """Within the block, a minimal ``pkg_resources`` (``resource_filename`` only) if the real one is missing.

    setuptools 81 removed ``pkg_resources``; pylidc needs it only while its ``__init__`` runs. The stand-in is
    taken out of ``sys.modules`` when the block ends so that other code probing for the real module (pytest's
    ``monkeypatch.syspath_prepend``, werkzeug, ...) does not find a partial one. With an older setuptools that
    still ships ``pkg_resources`` nothing is changed. Blocks may nest.

    Yields:
        True when the stand-in is in use, False when the real ``pkg_resources`` is there.
    """
    existing = sys.modules.get("pkg_resources")
    if existing is not None:
        yield bool(getattr(existing, PKG_RESOURCES_SHIM_FLAG, False))
        return
    if importlib.util.find_spec("pkg_resources") is not None:
        yield False
        return
    shim = types.ModuleType("pkg_resources", "naslung stand-in for setuptools' removed pkg_resources (pylidc only).")
    shim.resource_filename = _resource_filename  # type: ignore[attr-defined]
    setattr(shim, PKG_RESOURCES_SHIM_FLAG, True)
    sys.modules["pkg_resources"] = shim
    try:
        yield True
    finally:
        if sys.modules.get("pkg_resources") is shim:
            del sys.modules["pkg_resources"]


def install_numpy_aliases() -> list[str]:
    """Define ``np.int``/``np.float`` as the builtins they aliased, only where NumPy no longer has them.

    Returns:
        the names that were added by this call (empty when NumPy still has them or they were added before).
    """
    added = []
    for name, value in _NUMPY_ALIASES.items():
        if name not in vars(np):  # numpy 2's module __getattr__ raises for these, so look at the dict itself
            setattr(np, name, value)
            added.append(name)
    if added:
        logger.debug("added numpy aliases %s for pylidc", added)
    return added


def _install_configparser_alias() -> None:
    """Python 3.12 removed ``configparser.SafeConfigParser``, which pylidc's DICOM-path lookup still calls."""
    if not hasattr(configparser, "SafeConfigParser"):
        configparser.SafeConfigParser = configparser.ConfigParser  # type: ignore[attr-defined]


def import_pylidc() -> types.ModuleType:
    """Import and return the ``pylidc`` module after making it work on the installed setuptools/NumPy/Python.

    Idempotent: later calls return the already imported module.

    Returns:
        the ``pylidc`` module (``pl.query``, ``pl.Scan``, ``pl.Annotation``, ``pl.Contour``, ``pl.Zval``).

    Raises:
        ImportError: pylidc is not installed (``pip install pylidc``).
    """
    install_numpy_aliases()
    _install_configparser_alias()
    if "pylidc" in sys.modules:
        return sys.modules["pylidc"]
    with pkg_resources_shim(), warnings.catch_warnings():
        # setuptools 67-80 warn on every `import pkg_resources`, which pylidc's __init__ does: once per process, so
        # once per worker of a spawn pool too, where the CLI's console filter does not reach
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
        return importlib.import_module("pylidc")


def eager_scan_query(session: Any = None, pl: types.ModuleType | None = None) -> Any:
    """A ``Query`` over ``pl.Scan`` that loads annotations, their contours and the slice z values up front.

    pylidc's relationships are lazy: clustering one scan touches ``scan.annotations``, each
    ``annotation.contours`` and (for every contour) ``scan.zvals`` again, one SQL query each. With
    ``selectinload`` a whole batch of scans costs four queries. Filter and iterate the result as usual::

        pl = import_pylidc()
        scans = eager_scan_query().filter(pl.Scan.series_instance_uid.in_(uids)).all()

    Args:
        session: SQLAlchemy session to query with (default: pylidc's own ``pl._session``); worker processes
            pass a session of their own.
        pl: the pylidc module (default: :func:`import_pylidc`).

    Returns:
        a ``sqlalchemy.orm.Query`` of ``pl.Scan`` ordered by ``Scan.id``.
    """
    from sqlalchemy.orm import selectinload

    pl = import_pylidc() if pl is None else pl
    options = [selectinload(pl.Scan.annotations).selectinload(pl.Annotation.contours)]
    if hasattr(pl.Scan, "zvals"):
        options.append(selectinload(pl.Scan.zvals))
    query = pl.query(pl.Scan) if session is None else session.query(pl.Scan)
    return query.options(*options).order_by(pl.Scan.id)
