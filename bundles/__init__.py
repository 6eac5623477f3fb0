"""Sources of naslung's MONAI bundles: config and README templates, licences, the metadata schema and the
bundle runtime code (``runtime/``) that ``naslung export-bundle`` copies into each bundle."""

from __future__ import annotations

__all__: list[str] = []
