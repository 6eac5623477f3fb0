"""Parsing of ``--set key=value`` config overrides shared by the sub-commands."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

from naslung.pipeline.errors import ConfigError

__all__ = ["add_config_arguments", "parse_overrides"]


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--config FILE`` and repeatable ``--set KEY=VALUE`` (MONAI ``#`` ids, JSON values) to a parser."""
    parser.add_argument("--config", help="bundle-style JSON/YAML config on top of the packaged defaults")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set max_epochs=3 --set 'arch=\"[4,4,[8],[8],[8]]\"'",
    )


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["max_epochs=3", "attention=none"]`` -> ``{"max_epochs": 3, "attention": "none"}`` (JSON when it parses)."""
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not KEY=VALUE")
        try:
            overrides[key.strip()] = json.loads(text)
        except json.JSONDecodeError:
            overrides[key.strip()] = text
    return overrides
