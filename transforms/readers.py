"""A SimpleITK-based MONAI ``ImageReader`` for .mhd/.mha/.nii(.gz)/.nrrd files and DICOM series folders."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from monai.config import PathLike
from monai.data import ImageReader
from monai.data.utils import orientation_ras_lps
from monai.utils import MetaKeys, SpaceKeys, ensure_tuple

from naslung.networks.errors import DataError

__all__ = ["SimpleITKReader", "SIMPLEITK_SUFFIXES"]

logger = logging.getLogger(__name__)

#: File suffixes :class:`SimpleITKReader` claims in ``verify_suffix`` (folders are read as DICOM series).
SIMPLEITK_SUFFIXES: tuple[str, ...] = (".mhd", ".mha", ".nii", ".nii.gz", ".nrrd", ".nhdr", ".dcm")


class SimpleITKReader(ImageReader):
    """Load images with SimpleITK, returning what MONAI's ``ITKReader`` returns, without the 1.5 GB ``itk`` package.

    Arrays come back in MONAI's spatial order (x, y, z) (the transpose of ``sitk.GetArrayFromImage``), multi-component
    pixels as a trailing channel axis; the meta dictionary holds ``spacing``, ``original_affine``, ``affine``
    (4x4 voxel index -> world mm), ``space`` (RAS when ``affine_lps_to_ras``, as ``ITKReader`` and ``NibabelReader``
    do by default, else LPS, ITK's native frame), ``spatial_shape`` and ``original_channel_dim``, plus the file's
    own metadata keys. Usage: ``LoadImage(reader=SimpleITKReader())`` or ``LoadImaged(keys, reader=SimpleITKReader())``.

    Args:
        channel_dim: channel dimension of the stored image (``None``: ``"no_channel"`` for scalar images, -1 else).
        series_name: the DICOM ``SeriesInstanceUID`` to read when a folder holds several series (default: first).
        affine_lps_to_ras: convert the affine from ITK's LPS to RAS. Defaults to ``True``.
        kwargs: extra arguments for ``sitk.ReadImage`` (e.g. ``outputPixelType``).
    """

    def __init__(
        self,
        channel_dim: str | int | None = None,
        series_name: str = "",
        affine_lps_to_ras: bool = True,
        **kwargs,
    ) -> None:
        super().__init__()
        self.channel_dim = float("nan") if channel_dim == "no_channel" else channel_dim
        self.series_name = series_name
        self.affine_lps_to_ras = affine_lps_to_ras
        self.kwargs = kwargs

    def verify_suffix(self, filename: Sequence[PathLike] | PathLike) -> bool:
        """Whether every name is a folder (DICOM series) or has a suffix SimpleITK reads (see ``SIMPLEITK_SUFFIXES``).

        Args:
            filename: a file name or a list of them.
        """
        for name in ensure_tuple(filename):
            path = Path(name)
            if not (path.is_dir() or str(path).lower().endswith(SIMPLEITK_SUFFIXES)):
                return False
        return True

    def read(self, data: Sequence[PathLike] | PathLike, **kwargs) -> sitk.Image | list[sitk.Image]:
        """Read one image (or a list, stacked as channels by ``get_data``); a folder is read as a DICOM series.

        Args:
            data: file or folder name, or a list of them.
            kwargs: extra ``sitk.ReadImage`` arguments, overriding the constructor's.

        Raises:
            DataError: when a file cannot be read or a folder holds no DICOM series.
        """
        options = {**self.kwargs, **kwargs}
        images = []
        names = ensure_tuple(data)
        for name in names:
            path = Path(name)
            try:
                if path.is_dir():
                    images.append(sitk.ReadImage(self._series_files(path), **options))
                else:
                    images.append(sitk.ReadImage(str(path), **options))
            except RuntimeError as err:
                raise DataError(
                    f"SimpleITK cannot read this image ({str(err).strip().splitlines()[-1]}); check the file is a "
                    "complete .mhd/.raw pair, NIfTI, NRRD or DICOM series.",
                    path=str(path),
                ) from err
        return images if len(names) > 1 else images[0]

    def _series_files(self, folder: Path) -> list[str]:
        series_ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
        if not series_ids:
            raise DataError(
                "no DICOM series found in this folder; point at the folder holding the .dcm slices.", path=str(folder)
            )
        if self.series_name:
            if self.series_name not in series_ids:
                raise DataError(
                    f"DICOM series {self.series_name!r} not found; the folder holds {list(series_ids)}.",
                    path=str(folder),
                )
            series_id = self.series_name
        else:
            if len(series_ids) > 1:
                logger.warning("%s holds %d DICOM series; reading %s", folder, len(series_ids), series_ids[0])
            series_id = series_ids[0]
        return list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series_id))

    def get_data(self, img: sitk.Image | Sequence[sitk.Image]) -> tuple[np.ndarray, dict]:
        """Array (x, y, z[, c]) and meta dictionary of the image; several images are stacked on a new first axis.

        Args:
            img: a SimpleITK image or a list of them, as returned by :meth:`read`.

        Raises:
            DataError: when stacked images differ in shape or affine.
        """
        arrays: list[np.ndarray] = []
        meta: dict = {}
        for image in img if isinstance(img, (list, tuple)) else [img]:  # a sitk.Image is iterable (pixels)
            array = self._get_array_data(image)
            header = self._get_meta_dict(image)
            header[MetaKeys.ORIGINAL_AFFINE] = self._get_affine(image)
            header[MetaKeys.SPACE] = SpaceKeys.RAS if self.affine_lps_to_ras else SpaceKeys.LPS
            header[MetaKeys.AFFINE] = header[MetaKeys.ORIGINAL_AFFINE].copy()
            header[MetaKeys.SPATIAL_SHAPE] = self._get_spatial_shape(image)
            if self.channel_dim is None:
                header[MetaKeys.ORIGINAL_CHANNEL_DIM] = (
                    float("nan") if array.ndim == len(header[MetaKeys.SPATIAL_SHAPE]) else -1
                )
            else:
                header[MetaKeys.ORIGINAL_CHANNEL_DIM] = self.channel_dim
            if meta:
                self._check_compatible(header, meta)
            else:
                meta = header
            arrays.append(array)
        if len(arrays) == 1:
            return arrays[0], meta
        meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = 0
        return np.stack(arrays, axis=0), meta

    @staticmethod
    def _check_compatible(header: dict, first: dict) -> None:
        for key in (MetaKeys.SPATIAL_SHAPE, MetaKeys.AFFINE):
            if not np.allclose(header[key], first[key]):
                raise DataError(
                    f"images read together must share {key}: {np.asarray(header[key]).tolist()} != "
                    f"{np.asarray(first[key]).tolist()}; read them separately."
                )

    @staticmethod
    def _get_meta_dict(img: sitk.Image) -> dict:
        meta = {key: img.GetMetaData(key) for key in img.GetMetaDataKeys() if not key.startswith("ITK_")}
        meta["spacing"] = np.asarray(img.GetSpacing())
        return meta

    def _get_affine(self, img: sitk.Image) -> np.ndarray:
        """4x4 voxel index -> world mm: ``direction @ diag(spacing)`` plus origin, in LPS or (default) RAS."""
        spatial_rank = min(img.GetDimension(), 3)
        direction = np.asarray(img.GetDirection(), dtype=np.float64).reshape(img.GetDimension(), img.GetDimension())
        spacing = np.asarray(img.GetSpacing(), dtype=np.float64)
        origin = np.asarray(img.GetOrigin(), dtype=np.float64)
        affine = np.eye(spatial_rank + 1)
        affine[:spatial_rank, :spatial_rank] = direction[:spatial_rank, :spatial_rank] @ np.diag(spacing[:spatial_rank])
        affine[:spatial_rank, -1] = origin[:spatial_rank]
        return orientation_ras_lps(affine) if self.affine_lps_to_ras else affine

    def _get_spatial_shape(self, img: sitk.Image) -> np.ndarray:
        size = list(img.GetSize())
        if isinstance(self.channel_dim, int):
            size.pop(self.channel_dim)
        return np.asarray(size[: min(img.GetDimension(), 3)])

    @staticmethod
    def _get_array_data(img: sitk.Image) -> np.ndarray:
        array = sitk.GetArrayFromImage(img)  # (z, y, x[, c])
        if img.GetNumberOfComponentsPerPixel() == 1:
            return array.T
        return np.moveaxis(array.T, 0, -1)
