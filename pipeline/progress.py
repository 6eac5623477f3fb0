"""Progress reporting that library code can call and only the CLI draws (as tqdm bars)."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import Any, Protocol, TextIO, TypeVar

__all__ = ["Progress", "bar_options", "is_terminal", "no_progress", "tqdm_progress"]

#: Least seconds between two redraws of a bar on a terminal (tqdm's default) and on a file or pipe.
TERMINAL_REDRAW_S = 0.1
LOG_REDRAW_S = 60.0

T = TypeVar("T")


class Progress(Protocol):
    """Wraps an iterable to report progress: ``for x in progress(items, total=n, desc="scans"): ...``."""

    def __call__(self, iterable: Iterable[T], total: int | None = None, desc: str = "") -> Iterator[T]: ...


def no_progress(iterable: Iterable[T], total: int | None = None, desc: str = "") -> Iterator[T]:
    """The library default: iterate silently."""
    yield from iterable


def is_terminal(stream: TextIO | None = None) -> bool:
    """Whether ``stream`` (default: stderr, where the bars go) is a terminal rather than a file or pipe."""
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return bool(isatty()) if callable(isatty) else False


def bar_options(stream: TextIO | None = None) -> dict[str, Any]:
    """tqdm keyword arguments for a naslung bar drawn on ``stream`` (default: stderr), also for Ignite's
    ``ProgressBar``. On a terminal the bar redraws as tqdm's does; on a file or pipe (``nohup``, CI, a batch job's
    log) at most once every :data:`LOG_REDRAW_S` seconds, so a log keeps a line per bar a minute rather than ten
    redraws a second. (Ignite's bar redraws on every event it handles whatever the interval:
    :func:`naslung.pipeline.training.step.attach_progress_bar` advances it once an epoch on a log.)"""
    return {"dynamic_ncols": True, "mininterval": TERMINAL_REDRAW_S if is_terminal(stream) else LOG_REDRAW_S}


def tqdm_progress(iterable: Iterable[T], total: int | None = None, desc: str = "") -> Iterator[T]:
    """A tqdm bar on stderr (:func:`bar_options`), cleared when done; used by the CLI unless ``--quiet``."""
    from tqdm.auto import tqdm

    yield from tqdm(iterable, total=total, desc=desc, leave=False, **bar_options())
