"""Reading naslung's configuration files: the packaged defaults and user JSON/YAML files (MONAI bundle syntax)."""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

from naslung.pipeline.errors import ConfigError

__all__ = ["packaged_config", "read_config_file"]


def packaged_config(name: str) -> dict[str, Any]:
    """The packaged config ``pipeline/configs/<name>`` as a dict."""
    return json.loads(resources.files("naslung.pipeline").joinpath("configs", name).read_text(encoding="utf-8"))


def read_config_file(path: str | os.PathLike, what: str = "config") -> dict[str, Any]:
    """Read a user JSON/YAML config file with MONAI's loader.

    Raises:
        ConfigError: naming the file, when it is missing, unreadable, or not a mapping of keys to values.
    """
    from monai.bundle import ConfigParser

    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"{file}: {what} not found")
    try:
        content = ConfigParser.load_config_file(file)
    except Exception as err:  # noqa: BLE001 - MONAI raises several kinds for bad files
        raise ConfigError(f"{file}: cannot read {what} ({err})") from err
    if not isinstance(content, dict):
        raise ConfigError(f"{file}: {what} must be a mapping of keys to values")
    return dict(content)
