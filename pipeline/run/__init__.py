"""naslung.pipeline.run: the run folder's layout, config loading, the steps' done-markers, the trained networks a run
holds, and ``naslung run``'s job (:mod:`naslung.pipeline.run.job`, which calls every step).

The package imports nothing itself, so that a module of a step can import :mod:`naslung.pipeline.run.layout`,
:mod:`naslung.pipeline.run.config` or :mod:`naslung.pipeline.run.markers` without loading the job and so every step.
"""

from __future__ import annotations

__all__: list[str] = []
