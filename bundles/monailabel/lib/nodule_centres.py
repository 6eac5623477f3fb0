"""Nodule centres for the MONAI Label app: clicked voxels or label components -> voxel index and world mm (LPS).

Voxel indices are ``(i, j, k)`` of the image file's own grid (what MONAI Label clients such as 3D Slicer send as
``foreground`` points, and the (x, y, z) order of MONAI's readers); world coordinates are mm in LPS, the frame of
the bundles' ``center_mm`` (LUNA16's ``annotations.csv``, DICOM ``ImagePositionPatient``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

__all__ = ["ImageGeometry", "NoduleCentre", "read_geometry", "centres_from_points", "centres_from_label"]


@dataclass
class ImageGeometry:
    """Voxel grid of an image: ``size`` (i, j, k) voxels, ``spacing_mm`` (3,), ``origin_mm`` (3,) and the 3x3
    ``direction`` cosines, all in ITK's LPS convention."""

    size: tuple[int, int, int]
    spacing_mm: np.ndarray
    origin_mm: np.ndarray
    direction: np.ndarray

    def to_world_mm(self, index: Sequence[float]) -> list[float]:
        """World LPS mm of a continuous voxel index ``(i, j, k)``."""
        ijk = np.asarray(index, dtype=np.float64)
        return [float(v) for v in self.origin_mm + self.direction @ (self.spacing_mm * ijk)]

    def contains(self, index: Sequence[float]) -> bool:
        """Whether the voxel index lies inside the grid (voxel centres span ``0 .. size - 1``)."""
        ijk = np.asarray(index, dtype=np.float64)
        return bool(np.all(ijk >= -0.5) and np.all(ijk <= np.asarray(self.size) - 0.5))


@dataclass
class NoduleCentre:
    """One nodule to classify: its id, where it came from, its centre as voxel index and as world mm (LPS)."""

    nodule_id: str
    source: str
    center_voxel: list[float]
    center_mm: list[float]
    extra: dict[str, Any] = field(default_factory=dict)


def _geometry(image: sitk.Image | sitk.ImageFileReader, where: str = "image") -> ImageGeometry:
    """The grid of an image, or of a file reader after ``ReadImageInformation`` (both have the same getters)."""
    if image.GetDimension() != 3:
        raise ValueError(f"{where}: expected a 3D image, got {image.GetDimension()} dimensions")
    return ImageGeometry(
        size=tuple(int(n) for n in image.GetSize()),  # type: ignore[arg-type]
        spacing_mm=np.asarray(image.GetSpacing(), dtype=np.float64),
        origin_mm=np.asarray(image.GetOrigin(), dtype=np.float64),
        direction=np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3),
    )


def _read_series(folder: Path) -> sitk.Image:
    ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not ids:
        raise ValueError(f"{folder}: the folder holds no DICOM series")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), ids[0]))
    return reader.Execute()


def read_geometry(path: str | os.PathLike) -> ImageGeometry:
    """The voxel grid of an image file (header only) or of a DICOM series folder.

    Raises:
        ValueError: the path cannot be read as a 3D image.
    """
    location = Path(path)
    if location.is_dir():
        return _geometry(_read_series(location), str(location))
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(location))
    try:
        reader.ReadImageInformation()
    except RuntimeError as err:
        raise ValueError(f"{location}: not a readable image ({' '.join(str(err).split())[:200]})") from err
    return _geometry(reader, str(location))


def centres_from_points(points: Any, geometry: ImageGeometry, prefix: str = "click") -> list[NoduleCentre]:
    """Clicked points (MONAI Label's ``foreground``: a list of ``[i, j, k]`` voxel indices) as nodule centres.

    Raises:
        ValueError: a point is not three finite numbers or lies outside the image.
    """
    if points is None:
        return []
    if not isinstance(points, (list, tuple)):
        raise ValueError(f"foreground must be a list of [i, j, k] voxel indices, got {points!r}")
    centres = []
    for number, point in enumerate(points):
        try:
            index = [float(v) for v in point]
        except (TypeError, ValueError):
            index = []
        if len(index) != 3 or not np.all(np.isfinite(index)):
            raise ValueError(f"foreground point {number} must be three voxel indices [i, j, k], got {point!r}")
        if not geometry.contains(index):
            raise ValueError(f"foreground point {number} {index} lies outside the image of size {geometry.size}")
        centres.append(NoduleCentre(f"{prefix}_{number}", "foreground", index, geometry.to_world_mm(index)))
    return centres


def read_label_array(path: str | os.PathLike) -> tuple[np.ndarray, ImageGeometry]:
    """A label image as an integer array indexed ``[i, j, k]`` and its grid.

    Raises:
        ValueError: the file is not a readable 3D image.
    """
    location = Path(path)
    try:
        image = _read_series(location) if location.is_dir() else sitk.ReadImage(str(location))
    except RuntimeError as err:
        raise ValueError(f"{location}: not a readable label image ({' '.join(str(err).split())[:200]})") from err
    geometry = _geometry(image)
    array = sitk.GetArrayFromImage(image)
    if array.ndim != 3:
        raise ValueError(f"{location}: expected a single-channel 3D label image, got shape {array.shape}")
    return np.rint(array.transpose(2, 1, 0)).astype(np.int64), geometry


def centres_from_label(
    path: str | os.PathLike, values: Sequence[int] | None = None, prefix: str = "roi"
) -> list[NoduleCentre]:
    """Centroids of the connected components of a label image (26-connected), one nodule each.

    Args:
        path: the label image (same frame as the CT; its own grid is used for world coordinates).
        values: label values whose components are nodules, each value on its own (``extra["value"]`` records it);
            ``None``: every non-zero voxel, all values together.
        prefix: start of the nodule ids.

    Raises:
        ValueError: the label image cannot be read.
    """
    array, geometry = read_label_array(path)
    structure = np.ones((3, 3, 3), dtype=bool)
    groups: list[tuple[int | None, np.ndarray]]
    groups = [(None, array > 0)] if values is None else [(int(v), array == int(v)) for v in values]
    centres: list[NoduleCentre] = []
    for value, mask in groups:
        components, count = ndimage.label(mask, structure=structure)
        if count == 0:
            continue
        centroids = ndimage.center_of_mass(mask, components, range(1, count + 1))
        sizes = ndimage.sum_labels(mask, components, range(1, count + 1))
        for centroid, voxels in zip(centroids, sizes, strict=True):
            index = [float(v) for v in centroid]
            extra = {"voxels": int(voxels), **({"value": value} if value is not None else {})}
            nodule_id = f"{prefix}_{len(centres)}"
            centres.append(NoduleCentre(nodule_id, "label", index, geometry.to_world_mm(index), extra))
    return centres
