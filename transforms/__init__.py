"""naslung.transforms: MONAI-style array and dictionary transforms for nodule cubes."""

from __future__ import annotations

__all__: list[str] = []
