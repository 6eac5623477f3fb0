"""Progress reporting that library code can call and only the CLI draws (as tqdm bars)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol, TypeVar

__all__ = ["Progress", "no_progress", "tqdm_progress"]

T = TypeVar("T")


class Progress(Protocol):
    """Wraps an iterable to report progress: ``for x in progress(items, total=n, desc="scans"): ...``."""

    def __call__(self, iterable: Iterable[T], total: int | None = None, desc: str = "") -> Iterator[T]: ...


def no_progress(iterable: Iterable[T], total: int | None = None, desc: str = "") -> Iterator[T]:
    """The library default: iterate silently."""
    yield from iterable


def tqdm_progress(iterable: Iterable[T], total: int | None = None, desc: str = "") -> Iterator[T]:
    """A tqdm bar on stderr; used by the CLI unless ``--quiet``."""
    from tqdm.auto import tqdm

    yield from tqdm(iterable, total=total, desc=desc, dynamic_ncols=True, leave=False)
