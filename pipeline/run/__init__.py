"""naslung.pipeline.run: the run folder's layout, config loading and the trained networks a run holds.

The package imports nothing itself, so that a module of a step can import :mod:`naslung.pipeline.run.layout` or
:mod:`naslung.pipeline.run.config` without loading the others.
"""

from __future__ import annotations

__all__: list[str] = []
