"""naslung.pipeline.training: the ``train`` step, the components its ``train.json`` names (handlers, inferer, lr
schedule) and ``import-reference``. Imports nothing itself, so a bundle ships the components without the step."""

from __future__ import annotations

__all__: list[str] = []
