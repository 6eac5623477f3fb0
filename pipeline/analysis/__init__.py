"""naslung.pipeline.analysis: the ``evaluate`` step (ablation, feature discriminability, figures) and the run report.

Modules: :mod:`~naslung.pipeline.analysis.step` (the step, :func:`run_evaluate_step`), :mod:`~.ablation`,
:mod:`~.features`, :mod:`~.discriminability`, :mod:`~.figures` and :mod:`~.report`. The package imports nothing
itself, so that a module can import one of them without loading the others.
"""

from __future__ import annotations

__all__: list[str] = []
