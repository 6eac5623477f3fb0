"""Building blocks of naslung's networks (MONAI-style, ``spatial_dims`` aware)."""

from __future__ import annotations

__all__: list[str] = []
