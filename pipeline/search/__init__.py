"""naslung.pipeline.search: architecture search strategies (POP) over the CBAM-3D residual space."""

from __future__ import annotations

__all__: list[str] = []
