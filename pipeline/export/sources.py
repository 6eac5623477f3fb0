"""Where a bundle is made from: the repository's ``bundles/`` folder (or the installed ``naslung.bundles`` package
data) and the metadata JSON schema it holds."""

from __future__ import annotations

from pathlib import Path

from naslung.pipeline.errors import ConfigError

__all__ = ["SCHEMA_URL", "bundle_sources_dir", "local_schema_path"]


#: MONAI's published metadata schema named in every exported ``metadata.json`` (checked online by MONAI's tools).
SCHEMA_URL = "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json"


def bundle_sources_dir() -> Path:
    """The folder of the bundle sources: the installed ``naslung.bundles`` package data, else the repository's.

    Raises:
        ConfigError: when neither holds ``classifier/configs/inference.json``.
    """
    candidates: list[Path] = []
    try:
        from importlib import resources

        candidates.append(Path(str(resources.files("naslung.bundles"))))
    except (ModuleNotFoundError, TypeError):
        pass
    candidates.append(Path(__file__).resolve().parents[2] / "bundles")
    for folder in candidates:
        if (folder / "classifier" / "configs" / "inference.json").is_file():
            return folder
    raise ConfigError(
        f"bundle sources not found (looked in {[str(c) for c in candidates]}); reinstall naslung with its bundles/ "
        "folder (package data naslung.bundles)"
    )


def local_schema_path() -> Path:
    """naslung's JSON schema of ``metadata.json`` (from MONAI's bundle specification), for offline checks."""
    return bundle_sources_dir() / "schema" / "meta_schema.json"
