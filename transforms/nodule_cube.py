"""Nodule-cube extraction: trilinear sampling of an isotropic HU cube around a world-mm centre, and the HU window."""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.data.utils import orientation_ras_lps
from monai.transforms import MapTransform, ScaleIntensityRange, Transform
from monai.utils import MetaKeys, SpaceKeys, TransformBackends, convert_to_dst_type, look_up_option
from scipy.ndimage import affine_transform

from naslung.networks.errors import DataError

__all__ = [
    "HU_WINDOW",
    "hu_to_unit",
    "sample_cube_hu",
    "resample_scan_hu",
    "cut_cube_hu",
    "cube_affine",
    "ExtractNoduleCube",
    "ExtractNoduleCubed",
    "ExtractNoduleCubeD",
    "ExtractNoduleCubeDict",
]

#: Lung-nodule intensity window in HU, ``(low, high)``. It is the window of the DeepLung preprocessing that NAS-Lung
#: reuses (``lungwin = [-1200, 600]``): air and lung parenchyma (about -900 HU) to calcification/bone (a few hundred
#: HU) are kept, anything outside is clipped, and the window is mapped linearly onto ``[0, 1]`` by :func:`hu_to_unit`.
HU_WINDOW: tuple[float, float] = (-1200.0, 600.0)

# Tolerance, in voxels, when deciding whether a sample point lies inside the scan: points closer than this to the
# outermost voxel centres are clamped onto them instead of being padded, so float noise cannot flip a point between
# "inside" and "padding" depending on how its coordinates were computed.
_INSIDE_TOLERANCE_VOX = 1e-4


def hu_to_unit(hu: np.ndarray | torch.Tensor, window: Sequence[float] = HU_WINDOW) -> np.ndarray | torch.Tensor:
    """Clip HU to ``window`` and scale it linearly onto ``[0, 1]`` (MONAI ``ScaleIntensityRange``, ``clip=True``).

    Args:
        hu: intensities in HU, any shape; a numpy array or a torch tensor.
        window: ``(low, high)`` in HU; ``low`` maps to 0 and ``high`` to 1. Defaults to :data:`HU_WINDOW`.

    Returns:
        float32 values in ``[0, 1]``, same shape and container type (numpy/torch) as ``hu``.

    Raises:
        DataError: when ``window`` is not two finite numbers with ``low < high``.
    """
    low, high = _check_window(window)
    scaler = ScaleIntensityRange(a_min=low, a_max=high, b_min=0.0, b_max=1.0, clip=True, dtype=np.float32)
    dtype = torch.float32 if isinstance(hu, torch.Tensor) else np.float32
    scaled, *_ = convert_to_dst_type(scaler(hu), dst=hu, dtype=dtype)
    return scaled


def _check_window(window: Sequence[float]) -> tuple[float, float]:
    values = tuple(float(v) for v in window)
    if len(values) != 2 or not all(math.isfinite(v) for v in values) or values[0] >= values[1]:
        raise DataError(
            f"HU window {tuple(window)!r} is invalid; give two finite HU values (low, high) with low < high."
        )
    return values


def _check_volume_and_affine(volume: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise DataError(
            f"expected a 3D HU volume indexed (x, y, z), got an array of shape {volume.shape}; "
            "drop the channel dimension or pass a single 3D scan."
        )
    if not (np.issubdtype(volume.dtype, np.integer) or np.issubdtype(volume.dtype, np.floating)):
        raise DataError(f"expected an integer or floating HU volume, got dtype {volume.dtype}.")
    if min(volume.shape) < 1:
        raise DataError(f"the HU volume is empty (shape {volume.shape}).")
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise DataError(f"expected a finite 4x4 voxel-to-world affine, got shape {affine.shape}: {affine.tolist()}.")
    if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise DataError(f"the affine {affine.tolist()} is singular; the scan's spacing/direction metadata is broken.")
    return volume, affine


def _check_finite(values: np.ndarray, where: str) -> None:
    if np.issubdtype(values.dtype, np.floating) and not np.all(np.isfinite(values)):
        bad = int(np.count_nonzero(~np.isfinite(values)))
        raise DataError(
            f"the HU volume contains {bad} NaN/inf voxel(s) {where}; fix the scan conversion or fill them "
            "(e.g. with -1000 HU) before extracting cubes."
        )


def _check_sampling(size: int, spacing_mm: float) -> None:
    if int(size) != size or size < 1:
        raise DataError(f"cube size must be a positive integer number of voxels, got {size!r}.")
    if not (math.isfinite(spacing_mm) and spacing_mm > 0):
        raise DataError(f"cube spacing_mm must be a positive number of millimetres, got {spacing_mm!r}.")


def _check_centre_inside(volume_shape: Sequence[int], affine: np.ndarray, center_mm: np.ndarray) -> None:
    """Raise DataError when ``center_mm`` lies outside the box spanned by the outermost voxel centres."""
    if center_mm.shape != (3,) or not np.all(np.isfinite(center_mm)):
        raise DataError(f"center_mm must be three finite world coordinates in mm, got {center_mm.tolist()}.")
    centre_vox = np.linalg.solve(affine[:3, :3], center_mm - affine[:3, 3])
    upper = np.asarray(volume_shape, dtype=np.float64) - 1.0
    tol = _INSIDE_TOLERANCE_VOX
    if np.all(centre_vox >= -tol) and np.all(centre_vox <= upper + tol):
        return
    nearest_vox = np.clip(centre_vox, 0.0, upper)
    nearest_mm = affine[:3, :3] @ nearest_vox + affine[:3, 3]
    distance = float(np.linalg.norm(center_mm - nearest_mm))
    raise DataError(
        f"nodule centre {np.round(center_mm, 2).tolist()} mm lies {distance:.1f} mm outside the scan "
        f"(voxel coordinates {np.round(centre_vox, 1).tolist()}, scan shape {list(volume_shape)}); check that the "
        "centre and the affine use the same world frame (LPS for LUNA16/DICOM) and belong to the same series."
    )


def _outside_mask(
    matrix: np.ndarray, offset: np.ndarray, output_shape: Sequence[int], input_shape: Sequence[int]
) -> np.ndarray:
    """Boolean mask of output grid points whose input voxel coordinates ``matrix @ j + offset`` leave the scan.

    Computed in chunks along the first output axis so that whole-scan grids do not need full coordinate arrays.
    """
    upper = np.asarray(input_shape, dtype=np.float64) - 1.0
    tol = _INSIDE_TOLERANCE_VOX
    n0, n1, n2 = (int(n) for n in output_shape)
    j1 = np.arange(n1, dtype=np.float64)[None, :, None]
    j2 = np.arange(n2, dtype=np.float64)[None, None, :]
    mask = np.zeros((n0, n1, n2), dtype=bool)
    chunk = max(1, (1 << 22) // max(1, n1 * n2))
    for start in range(0, n0, chunk):
        j0 = np.arange(start, min(n0, start + chunk), dtype=np.float64)[:, None, None]
        for axis in range(3):
            coord = offset[axis] + matrix[axis, 0] * j0 + matrix[axis, 1] * j1 + matrix[axis, 2] * j2
            mask[start : start + j0.shape[0]] |= (coord < -tol) | (coord > upper[axis] + tol)
    return mask


def _resample(
    volume: np.ndarray, matrix: np.ndarray, offset: np.ndarray, output_shape: Sequence[int], pad_value: float
) -> np.ndarray:
    """Trilinear resampling: ``out[j] = volume(matrix @ j + offset)``; points outside the scan get ``pad_value``."""
    is_diagonal = np.count_nonzero(matrix - np.diag(np.diagonal(matrix))) == 0
    out = affine_transform(
        volume,
        np.diagonal(matrix).copy() if is_diagonal else matrix,
        offset=offset,
        output_shape=tuple(int(n) for n in output_shape),
        output=np.float32,
        order=1,
        mode="nearest",
    )
    out[_outside_mask(matrix, offset, output_shape, volume.shape)] = pad_value
    return out


def cube_affine(center_mm: Sequence[float], size: int = 32, spacing_mm: float = 1.0) -> np.ndarray:
    """The 4x4 index-to-world affine of the cube :func:`sample_cube_hu` returns (axes along world x, y, z).

    Args:
        center_mm: cube centre, world mm (same frame as the scan affine).
        size: cube edge length in voxels.
        spacing_mm: isotropic cube spacing in mm.
    """
    affine = np.diag([spacing_mm, spacing_mm, spacing_mm, 1.0])
    affine[:3, 3] = np.asarray(center_mm, dtype=np.float64) - (size - 1) / 2.0 * spacing_mm
    return affine


def sample_cube_hu(
    volume: np.ndarray,
    affine: np.ndarray,
    center_mm: Sequence[float],
    size: int = 32,
    spacing_mm: float = 1.0,
    pad_value: float = -1000.0,
    region_first: bool = True,
) -> np.ndarray:
    """Sample an isotropic HU cube centred on a world-mm point, with trilinear interpolation.

    ``cube[a, b, c]`` is the HU value at ``center_mm + ((a, b, c) - (size - 1) / 2) * spacing_mm``: the cube's axes
    run along the world x, y, z axes whatever the scan's direction cosines, so cubes from differently oriented scans
    look alike. Points outside the box spanned by the outermost voxel centres get ``pad_value`` (nodules at the scan
    edge are padded, as air by default).

    Args:
        volume: HU array, (X, Y, Z) in MONAI/ITK spatial order (``sitk.GetArrayFromImage(img).transpose(2, 1, 0)``);
            int16 or float.
        affine: (4, 4) voxel index -> world mm, in the same frame as ``center_mm`` (LPS for LUNA16/DICOM/ITK).
        center_mm: (3,) cube centre in world mm.
        size: cube edge length in voxels (the paper uses 32).
        spacing_mm: isotropic cube spacing in mm (the paper uses 1 mm).
        pad_value: HU written where the cube leaves the scan.
        region_first: ``True`` (default) crops the minimal voxel region around the cube and interpolates only that;
            ``False`` is the slow reference path: resample the whole scan onto a ``spacing_mm`` grid whose nodes
            include the cube's points (:func:`resample_scan_hu`), then cut the cube (:func:`cut_cube_hu`). The two
            agree to float rounding.

    Returns:
        float32 array of shape (size, size, size), HU.

    Raises:
        DataError: when the volume is not 3D, the affine is not an invertible 4x4 matrix, the centre lies outside the
            scan (the message says by how many mm), or the voxels used contain NaN/inf (the region around the cube
            for ``region_first=True``, the whole scan otherwise).
    """
    volume, affine = _check_volume_and_affine(volume, affine)
    _check_sampling(size, spacing_mm)
    centre = np.asarray(center_mm, dtype=np.float64).reshape(-1)
    _check_centre_inside(volume.shape, affine, centre)
    first_point = centre - (size - 1) / 2.0 * spacing_mm

    if not region_first:
        resampled, resampled_affine = resample_scan_hu(volume, affine, spacing_mm, first_point, pad_value)
        return cut_cube_hu(resampled, resampled_affine, first_point, size, pad_value)

    inverse = np.linalg.inv(affine[:3, :3])
    matrix = inverse * spacing_mm  # output index step -> voxel step
    offset = inverse @ (first_point - affine[:3, 3])
    corners = np.array([[a, b, c] for a in (0, size - 1) for b in (0, size - 1) for c in (0, size - 1)], float)
    corner_vox = corners @ matrix.T + offset
    upper = np.asarray(volume.shape) - 1
    lo = np.clip(np.floor(corner_vox.min(axis=0)).astype(int), 0, upper)
    hi = np.clip(np.ceil(corner_vox.max(axis=0)).astype(int), 0, upper)
    region = volume[lo[0] : hi[0] + 1, lo[1] : hi[1] + 1, lo[2] : hi[2] + 1]
    _check_finite(region, f"around the centre {np.round(centre, 2).tolist()} mm")
    cube = _resample(region, matrix, offset - lo, (size,) * 3, pad_value)
    # The region is clipped to the scan, so points outside the region but inside the scan cannot exist; the region's
    # mask above is therefore the scan's mask.
    return cube


def resample_scan_hu(
    volume: np.ndarray,
    affine: np.ndarray,
    spacing_mm: float = 1.0,
    grid_point_mm: Sequence[float] | None = None,
    pad_value: float = -1000.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Resample a whole scan onto an isotropic world-axis-aligned grid (trilinear), the classic preprocessing step.

    Args:
        volume: HU array (X, Y, Z), see :func:`sample_cube_hu`.
        affine: (4, 4) voxel index -> world mm.
        spacing_mm: isotropic output spacing in mm.
        grid_point_mm: (3,) a world point that must be a grid node (e.g. a cube's first point); defaults to the
            low corner of the scan's world bounding box.
        pad_value: HU for grid nodes outside the scan (only possible for oblique scans).

    Returns:
        ``(resampled, resampled_affine)``: float32 HU array covering the scan's world bounding box, and its (4, 4)
        index-to-world affine (diagonal ``spacing_mm``).

    Raises:
        DataError: for a non-3D volume, a bad affine or spacing, or NaN/inf anywhere in the volume.
    """
    volume, affine = _check_volume_and_affine(volume, affine)
    _check_sampling(1, spacing_mm)
    _check_finite(volume, "in the scan")
    upper = np.asarray(volume.shape, dtype=np.float64) - 1.0
    corners_vox = np.array([[a, b, c] for a in (0, upper[0]) for b in (0, upper[1]) for c in (0, upper[2])])
    corners_mm = corners_vox @ affine[:3, :3].T + affine[:3, 3]
    bb_min, bb_max = corners_mm.min(axis=0), corners_mm.max(axis=0)
    anchor = bb_min if grid_point_mm is None else np.asarray(grid_point_mm, dtype=np.float64)
    eps = 1e-6
    k_min = np.floor((bb_min - anchor) / spacing_mm + eps)
    k_max = np.ceil((bb_max - anchor) / spacing_mm - eps)
    origin = anchor + k_min * spacing_mm
    shape = (k_max - k_min + 1).astype(int)

    inverse = np.linalg.inv(affine[:3, :3])
    matrix = inverse * spacing_mm
    offset = inverse @ (origin - affine[:3, 3])
    resampled = _resample(volume, matrix, offset, shape, pad_value)
    resampled_affine = np.diag([spacing_mm, spacing_mm, spacing_mm, 1.0])
    resampled_affine[:3, 3] = origin
    return resampled, resampled_affine


def cut_cube_hu(
    resampled: np.ndarray,
    resampled_affine: np.ndarray,
    first_point_mm: Sequence[float],
    size: int = 32,
    pad_value: float = -1000.0,
) -> np.ndarray:
    """Cut a (size, size, size) cube from a grid made by :func:`resample_scan_hu`, padding where it leaves the grid.

    Args:
        resampled: (X, Y, Z) float HU grid.
        resampled_affine: its (4, 4) diagonal index-to-world affine.
        first_point_mm: (3,) world position of ``cube[0, 0, 0]``; it is rounded to the nearest grid node.
        size: cube edge length in voxels.
        pad_value: HU outside the grid.

    Returns:
        float32 array (size, size, size), HU.
    """
    spacing = np.diagonal(resampled_affine)[:3]
    start = np.rint((np.asarray(first_point_mm, dtype=np.float64) - resampled_affine[:3, 3]) / spacing).astype(int)
    cube = np.full((size, size, size), pad_value, dtype=np.float32)
    src_lo = np.maximum(start, 0)
    src_hi = np.minimum(start + size, resampled.shape)
    if np.any(src_hi <= src_lo):
        return cube
    dst_lo = src_lo - start
    dst_hi = dst_lo + (src_hi - src_lo)
    cube[dst_lo[0] : dst_hi[0], dst_lo[1] : dst_hi[1], dst_lo[2] : dst_hi[2]] = resampled[
        src_lo[0] : src_hi[0], src_lo[1] : src_hi[1], src_lo[2] : src_hi[2]
    ]
    return cube


def _as_numpy(value: object, dtype: type | None = None) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=dtype)


class ExtractNoduleCube(Transform):
    """Cut the (1, size, size, size) nodule cube around a world-mm centre from a scan loaded by ``LoadImage``.

    Re-implements the NAS-Lung input preparation (paper Sec. 4.1.3: 32x32x32 nodule cubes; the 1 mm resampling and
    the [-1200, 600] HU lung window scaled to [0, 1] come from the DeepLung preprocessing NAS-Lung's code reuses) on
    MONAI data, cropping before interpolating instead of resampling whole scans. The scan is a MetaTensor whose
    ``affine`` maps voxel indices (x, y, z) to world mm, in the space named by its ``meta["space"]``
    (``monai.utils.SpaceKeys``; MONAI's readers give RAS by default, ``affine_lps_to_ras=True``, and MetaTensors
    without the key are RAS). Centres are world mm in ``center_space``, LPS by default, as in LUNA16's
    ``annotations.csv`` and DICOM ``ImagePositionPatient``; the affine is converted to that space before sampling,
    so the cube's axes run along the ``center_space`` axes (+L, +P, +S for LPS) whatever the reader did. The output
    MetaTensor carries the cube's affine expressed in the input's space.

    Args:
        size: cube edge in voxels (paper: 32).
        spacing_mm: isotropic cube spacing in mm (paper: 1).
        pad_value: HU outside the scan (air).
        hu_window: ``(low, high)`` HU window mapped to [0, 1]; see :data:`HU_WINDOW`.
        scale_to_unit: ``True`` returns window-scaled float32 in [0, 1]; ``False`` returns HU.
        center_space: world frame of the centres, ``"LPS"`` (default) or ``"RAS"``.
        region_first: passed to :func:`sample_cube_hu` (``False`` only for the reference benchmark).
    """

    backend = [TransformBackends.NUMPY]

    def __init__(
        self,
        size: int = 32,
        spacing_mm: float = 1.0,
        pad_value: float = -1000.0,
        hu_window: Sequence[float] = HU_WINDOW,
        scale_to_unit: bool = True,
        center_space: str = SpaceKeys.LPS,
        region_first: bool = True,
    ) -> None:
        _check_sampling(size, spacing_mm)
        self.size = int(size)
        self.spacing_mm = float(spacing_mm)
        self.pad_value = float(pad_value)
        self.hu_window = _check_window(hu_window)
        self.scale_to_unit = scale_to_unit
        self.center_space = look_up_option(str(center_space).upper(), [SpaceKeys.LPS.value, SpaceKeys.RAS.value])
        self.region_first = region_first

    def __call__(
        self,
        img: MetaTensor | np.ndarray | torch.Tensor,
        center_mm: Sequence[float] | np.ndarray | torch.Tensor,
        affine: np.ndarray | torch.Tensor | None = None,
        space: str | None = None,
    ) -> MetaTensor:
        """Extract one cube.

        Args:
            img: scan, (X, Y, Z) or channel-first (1, X, Y, Z), HU.
            center_mm: (3,) nodule centre in world mm, in ``self.center_space``.
            affine: (4, 4) voxel-to-world affine; defaults to ``img.affine`` (required for plain arrays).
            space: the affine's world frame; defaults to ``img.meta["space"]``, else RAS (MONAI's convention).

        Returns:
            MetaTensor (1, size, size, size), float32, [0, 1] (or HU when ``scale_to_unit=False``).

        Raises:
            DataError: for a multi-channel or non-3D scan, a missing affine, or any error of :func:`sample_cube_hu`.
        """
        meta = dict(img.meta) if isinstance(img, MetaTensor) else {}
        if affine is None:
            if not isinstance(img, MetaTensor):
                raise DataError(
                    "ExtractNoduleCube needs the scan's voxel-to-world affine: load the scan with LoadImage(d) "
                    "(a MetaTensor) or pass affine=..."
                )
            affine = img.affine
        if space is None:
            space = meta.get(MetaKeys.SPACE, SpaceKeys.RAS)
        space = look_up_option(str(space).upper(), [SpaceKeys.LPS.value, SpaceKeys.RAS.value])
        volume = _as_numpy(img)
        if volume.ndim == 4:
            if volume.shape[0] != 1:
                raise DataError(
                    f"expected a single-channel scan (1, X, Y, Z) or (X, Y, Z), got shape {volume.shape}; "
                    "select the CT channel first."
                )
            volume = volume[0]
        affine_np = _as_numpy(affine, np.float64)
        if affine_np.shape != (4, 4):
            raise DataError(f"expected a 4x4 voxel-to-world affine, got shape {affine_np.shape}.")
        if space != self.center_space:
            affine_np = orientation_ras_lps(affine_np)
        centre = _as_numpy(center_mm, np.float64).reshape(-1)
        cube = sample_cube_hu(
            volume,
            affine_np,
            centre,
            size=self.size,
            spacing_mm=self.spacing_mm,
            pad_value=self.pad_value,
            region_first=self.region_first,
        )
        if self.scale_to_unit:
            cube = hu_to_unit(cube, self.hu_window)
        out_affine = cube_affine(centre, self.size, self.spacing_mm)
        if space != self.center_space:
            out_affine = orientation_ras_lps(out_affine)
        for key in (MetaKeys.AFFINE, MetaKeys.SPATIAL_SHAPE, MetaKeys.ORIGINAL_CHANNEL_DIM):
            meta.pop(key, None)
        meta[MetaKeys.SPACE] = space
        meta[MetaKeys.SPATIAL_SHAPE] = np.array([self.size] * 3)
        meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = 0
        return MetaTensor(torch.as_tensor(cube[None]), affine=torch.as_tensor(out_affine), meta=meta)


class ExtractNoduleCubed(MapTransform):
    """Dictionary wrapper of :class:`ExtractNoduleCube`: replaces each scan under ``keys`` by its nodule cube.

    Args:
        keys: keys of the scans (MetaTensors from ``LoadImaged``) to turn into cubes.
        center_key: key of the (3,) nodule centre in world mm (``center_space``, LPS by default).
        size, spacing_mm, pad_value, hu_window, scale_to_unit, center_space, region_first: see
            :class:`ExtractNoduleCube`.
        allow_missing_keys: do not raise when a key in ``keys`` is absent.

    Raises:
        DataError: when ``center_key`` is missing from the data dictionary.
    """

    backend = ExtractNoduleCube.backend

    def __init__(
        self,
        keys: KeysCollection,
        center_key: str = "center_mm",
        size: int = 32,
        spacing_mm: float = 1.0,
        pad_value: float = -1000.0,
        hu_window: Sequence[float] = HU_WINDOW,
        scale_to_unit: bool = True,
        center_space: str = SpaceKeys.LPS,
        region_first: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.center_key = center_key
        self.extractor = ExtractNoduleCube(
            size=size,
            spacing_mm=spacing_mm,
            pad_value=pad_value,
            hu_window=hu_window,
            scale_to_unit=scale_to_unit,
            center_space=center_space,
            region_first=region_first,
        )

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            if self.center_key not in d:
                raise DataError(
                    f"the data dictionary has no nodule centre under {self.center_key!r} (keys: {sorted(map(str, d))});"
                    " add the centre in world mm or set center_key."
                )
            d[key] = self.extractor(d[key], d[self.center_key])
        return d


ExtractNoduleCubeD = ExtractNoduleCubeDict = ExtractNoduleCubed
