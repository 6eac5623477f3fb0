"""The ``naslung`` command line: parses arguments and calls pipeline steps; nothing else lives here."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from naslung.pipeline.errors import NaslungError

__all__ = ["main", "build_parser", "COMMAND_MODULES"]

#: Each module holds one sub-command: ``add_parser(subparsers)`` registers it and sets ``func`` on its parser.
COMMAND_MODULES: tuple[str, ...] = (
    "naslung.pipeline.commands.prepare",
    "naslung.pipeline.commands.train",
    "naslung.pipeline.commands.run",
    "naslung.pipeline.commands.search",
    "naslung.pipeline.commands.ensemble",
    "naslung.pipeline.commands.evaluate",
    "naslung.pipeline.commands.export_bundle",
)


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every registered sub-command."""
    parser = argparse.ArgumentParser(
        prog="naslung",
        description="NAS-Lung on MONAI: lung-nodule cubes, CBAM-3D networks, POP search, ensembles and bundles.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars, warnings and errors only")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code (0 ok, 1 naslung error, 2 usage)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except NaslungError as err:
        print(f"naslung {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
