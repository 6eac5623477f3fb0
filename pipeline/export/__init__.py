"""naslung.pipeline.export: the ``export-bundle`` step, a run's trained network or ensemble as a MONAI bundle.

Modules: :mod:`~naslung.pipeline.export.step` (the step, :func:`export_bundle`), :mod:`~.sources` (the bundle
sources), :mod:`~.run_content` (the trained networks and metrics taken from a run), :mod:`~.scripts` (the declared
naslung modules copied into ``scripts/``), :mod:`~.configs`, :mod:`~.models` (weights, ONNX, latency), :mod:`~.docs`,
:mod:`~.checks` (bundle rules, MONAI's verification) and :mod:`~.smoke` (running a bundle without naslung).

The package imports nothing itself, so that a module can import one of them without loading the others.
"""

from __future__ import annotations

__all__: list[str] = []
