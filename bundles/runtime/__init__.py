"""Runtime code of naslung's MONAI bundles (nodule inputs, prediction writer, ensemble); copied into ``scripts/``."""

from __future__ import annotations

__all__: list[str] = []
