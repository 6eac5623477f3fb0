"""The one error hierarchy of naslung, at the floor of the package so networks, transforms and bundle code can raise it.

Every message names the file or value at fault and the fix. ``naslung.pipeline.errors`` re-exports these classes
(the same objects), so ``except`` clauses work whichever module a caller imports them from.
"""

from __future__ import annotations

__all__ = ["NaslungError", "DataError", "ConfigError", "SearchError"]


class NaslungError(Exception):
    """Base class of every error naslung raises on purpose."""


class DataError(NaslungError):
    """A scan, cube, annotation or table is missing, unreadable or inconsistent.

    Args:
        message: what is wrong and what to do about it.
        path: the file or folder at fault, when there is one; it is prefixed to the message.
    """

    def __init__(self, message: str, path: str | None = None) -> None:
        self.path = None if path is None else str(path)
        self.reason = message
        super().__init__(message if path is None else f"{path}: {message}")


class ConfigError(NaslungError):
    """A configuration file, override or option value is invalid."""


class SearchError(NaslungError):
    """The architecture search cannot go on (bad search space, corrupt journal, ...)."""
