"""naslung.networks: architecture specs, CBAM-3D residual networks, losses, the factory and cost profiling."""

from __future__ import annotations

__all__: list[str] = []
