"""naslung.pipeline.data: the ``prepare`` step: cohort and folds, scan reading and writing, the embedded synthetic data
set, pylidc compatibility and datalists; also the packaged default cohort. Imports nothing itself."""

from __future__ import annotations

__all__: list[str] = []
