"""The error hierarchy as the pipeline imports it: the classes of :mod:`naslung.networks.errors`, re-exported.

They are the same objects (one hierarchy), so ``except DataError`` catches what networks, transforms and the bundle
runtime raise.
"""

from __future__ import annotations

from naslung.networks.errors import ConfigError, DataError, NaslungError, SearchError

__all__ = ["NaslungError", "DataError", "ConfigError", "SearchError"]
