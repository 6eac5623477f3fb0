"""naslung.pipeline: data preparation, training, search, reporting and the ``naslung`` command line."""

from __future__ import annotations

from naslung.pipeline.errors import ConfigError, DataError, NaslungError, SearchError

__all__ = ["NaslungError", "DataError", "ConfigError", "SearchError"]
