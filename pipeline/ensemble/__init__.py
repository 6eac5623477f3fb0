"""naslung.pipeline.ensemble: the ``ensemble`` step: majority vote of the trained networks, the ensemble-size study,
the baselines it is compared with, and its figures.

The package imports nothing itself, so that a module can import one of them without loading the others.
"""

from __future__ import annotations

__all__: list[str] = []
