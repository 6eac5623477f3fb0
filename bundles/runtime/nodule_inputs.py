"""Bundle inputs: datalists of CT scans with nodule centres, or of ready cubes, turned into one cube per nodule.

A failing item (missing file, wrong shape, centre outside the scan, an image that is not a CT) becomes a blank cube
with an ``error`` message instead of an exception, so one bad nodule never stops the others.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor, NibabelReader
from monai.transforms import MapTransform
from monai.utils import MetaKeys

from naslung.bundles.runtime.fold_split import split_for_fold
from naslung.networks.errors import ConfigError, DataError, NaslungError
from naslung.transforms.nodule_cube import HU_WINDOW, ExtractNoduleCube
from naslung.transforms.readers import SimpleITKReader

__all__ = [
    "CUBE_SUFFIXES",
    "SCAN_SUFFIXES",
    "describe_error",
    "read_nodule_datalist",
    "split_train_val",
    "NoduleInputd",
]

logger = logging.getLogger(__name__)

#: File types read as ready nodule cubes (no ``center_mm``).
CUBE_SUFFIXES: tuple[str, ...] = (".npy", ".nii", ".nii.gz")
#: File types that are whole scans and need a ``center_mm`` (DICOM series folders too).
SCAN_SUFFIXES: tuple[str, ...] = (".mhd", ".mha", ".nrrd", ".nhdr", ".dcm")
#: DICOM tag of the modality in the reader's meta dictionary.
_MODALITY_TAG = "0008|0060"


def _series_modality(path: Path) -> str:
    """The DICOM modality of the first slice of a series folder ("" when unknown or not a folder)."""
    if not path.is_dir():
        return ""
    for series_id in sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(path))[:1]:
        files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path), series_id)
        if files:
            reader = sitk.ImageFileReader()
            reader.SetFileName(files[0])
            reader.ReadImageInformation()
            if reader.HasMetaDataKey(_MODALITY_TAG):
                return reader.GetMetaData(_MODALITY_TAG)
    return ""


def describe_error(err: BaseException) -> str:
    """A one-line message for an item's failure: the first naslung error in the chain, else the exception text."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, NaslungError):
            return " ".join(str(seen).split())
        seen = seen.__cause__ or seen.__context__
    lines = [line for line in str(err).strip().splitlines() if line.strip()]
    return f"{type(err).__name__}: {' '.join(lines[-1].split()) if lines else 'no message'}"


def _load_json_list(path: Path) -> list[Any]:
    if not path.is_file():
        raise ConfigError(
            f"{path}: datalist not found; pass --datalist FILE, a JSON list of "
            '{"image": scan, "center_mm": [x, y, z]} or {"image": cube} entries'
        )
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path}: the datalist is not readable JSON ({err})") from err
    if not isinstance(content, list):
        raise ConfigError(f"{path}: the datalist must be a JSON list of nodule entries, got {type(content).__name__}")
    return content


def read_nodule_datalist(
    datalist: str | os.PathLike | Sequence[Any], dataset_dir: str | os.PathLike | None = None
) -> list[dict[str, Any]]:
    """Read a bundle datalist into items with absolute ``image`` paths and a ``nodule_id`` each.

    Entries are ``{"image": scan, "center_mm": [x, y, z]}`` (a DICOM series folder, ``.mhd`` or NIfTI CT scan and
    the nodule centre in world mm, LPS as in LUNA16's ``annotations.csv``) or ``{"image": cube}`` (a 32³ cube in
    [0, 1] as ``.npy`` or NIfTI); ``nodule_id`` (default: the entry's index) and ``label`` are optional. An entry
    that is not an object is kept with an error for :class:`NoduleInputd` to report.

    Args:
        datalist: path of a JSON list, or the list itself.
        dataset_dir: folder relative ``image`` paths are resolved against; defaults to the datalist file's folder.

    Raises:
        ConfigError: the datalist file is missing, is not JSON or is not a list.
    """
    if isinstance(datalist, (str, os.PathLike)):
        path = Path(datalist)
        entries = _load_json_list(path)
        base = Path(dataset_dir) if dataset_dir else path.resolve().parent
    else:
        entries = list(datalist)
        base = Path(dataset_dir) if dataset_dir else None
    items: list[dict[str, Any]] = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            problem = f"datalist entry {index} is not an object"
            items.append({"nodule_id": str(index), "image": "", "_item_error": problem})
            continue
        item = dict(entry)
        item["nodule_id"] = str(item.get("nodule_id", index))
        image = item.get("image")
        if isinstance(image, (str, os.PathLike)) and str(image) and base is not None and not Path(image).is_absolute():
            item["image"] = str(base / image)
        items.append(item)
    return items


def split_train_val(
    datalist: str | os.PathLike | Sequence[Any],
    val_datalist: str | os.PathLike | Sequence[Any] | None = None,
    dataset_dir: str | os.PathLike | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
) -> dict[str, list[dict[str, Any]]]:
    """Training and validation datalists of labelled cubes for fine-tuning a bundle.

    Without ``val_datalist`` the validation set is carved from ``datalist`` by patient (``patient_id`` when the
    entries have one), stratified by label, as naslung's own training does.

    Args:
        datalist: labelled cube entries ``{"image": cube.npy, "label": 0|1[, "patient_id": ...]}`` (file or list).
        val_datalist: optional separate validation entries.
        dataset_dir: folder relative paths are resolved against (default: each datalist file's folder).
        val_fraction: share of nodules carved for validation when ``val_datalist`` is not given.
        seed: seed of the validation draw.

    Returns:
        ``{"train": [...], "val": [...]}``.

    Raises:
        ConfigError: an entry has no cube, no 0/1 label, or is a scan (fine-tuning reads ready cubes).
    """
    train = _labelled_cubes(read_nodule_datalist(datalist, dataset_dir))
    if val_datalist:
        return {"train": train, "val": _labelled_cubes(read_nodule_datalist(val_datalist, dataset_dir))}
    try:
        split = split_for_fold(train, None, val_fraction=val_fraction, seed=seed)
    except DataError as err:
        raise ConfigError(f"cannot carve a validation set from the training datalist: {err}") from err
    return {"train": split.train, "val": split.val}


def _labelled_cubes(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for item in items:
        where = f"datalist entry {item['nodule_id']}"
        if item.get("_item_error"):
            raise ConfigError(f"{where}: {item['_item_error']}")
        if item.get("center_mm") is not None or not str(item.get("image", "")).lower().endswith(".npy"):
            raise ConfigError(
                f"{where}: fine-tuning reads ready 32³ cubes in [0, 1] as .npy files (what `naslung prepare` writes); "
                f"got {item.get('image')!r}. Cut the cubes from the scans first."
            )
        if not Path(item["image"]).is_file():
            raise ConfigError(f"{where}: cube {item['image']} not found")
        if item.get("label") not in (0, 1):
            raise ConfigError(f"{where}: label must be 0 (benign) or 1 (malignant), got {item.get('label')!r}")
    return items


class NoduleInputd(MapTransform):
    """Turn a datalist entry into the network input: one (1, S, S, S) cube in [0, 1], or a blank cube and an error.

    For ``{"image": scan, "center_mm": [x, y, z]}`` the scan (DICOM series folder, ``.mhd``/``.mha``, NIfTI, NRRD)
    is read with :class:`naslung.transforms.SimpleITKReader`, checked to be a single-channel 3D CT in Hounsfield
    units, and the cube is cut with :class:`naslung.transforms.ExtractNoduleCube` (1 mm trilinear resampling around
    the centre, given in world mm in LPS, HU window ``hu_window`` scaled to [0, 1]). For ``{"image": cube}`` a
    ``.npy`` or NIfTI array of shape (S, S, S) or (1, S, S, S) with values in [0, 1] is used as it is (NIfTI cubes
    are taken in their stored index order, the (x, y, z) order of naslung's ``.npy`` cubes).

    Every failure of an item is caught: the output then holds a zero cube and ``error`` the reason, so a prediction
    writer can report the item and the other nodules still run. The output dictionary holds only ``image`` (a
    float32 tensor), ``nodule_id``, ``source`` (the input path), ``center_mm`` (JSON text, empty for cubes),
    ``error`` (empty when fine) and, with ``label_key``, the label (-1 when missing), so items always collate.

    Args:
        keys: the one key of the input path (``"image"``).
        center_key: key of the nodule centre, world mm, LPS.
        id_key: key of the nodule id.
        source_key: output key of the input path.
        error_key: output key of the error message.
        label_key: key of the 0/1 label to carry (evaluation); a missing label is then an error.
        size: cube edge in voxels (32).
        spacing_mm: cube voxel size in mm (1).
        pad_value: HU written where the cube leaves the scan.
        hu_window: ``(low, high)`` HU mapped to [0, 1].
        min_air_hu: a CT must hold a value at or below this (air is about -1000 HU); images without are rejected.
        unit_tolerance: slack on the [0, 1] range of a ready cube.
        allow_missing_keys: MONAI's option (the key is always read here).

    Raises:
        ConfigError: when more than one key is given.
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        center_key: str = "center_mm",
        id_key: str = "nodule_id",
        source_key: str = "source",
        error_key: str = "error",
        label_key: str | None = None,
        size: int = 32,
        spacing_mm: float = 1.0,
        pad_value: float = -1000.0,
        hu_window: Sequence[float] = HU_WINDOW,
        min_air_hu: float = -500.0,
        unit_tolerance: float = 1e-3,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ConfigError(f"NoduleInputd reads one input key, got {self.keys}")
        self.center_key, self.id_key, self.source_key = center_key, id_key, source_key
        self.error_key, self.label_key = error_key, label_key
        self.size = int(size)
        self.hu_window = tuple(float(v) for v in hu_window)
        self.min_air_hu = float(min_air_hu)
        self.unit_tolerance = float(unit_tolerance)
        self.extractor = ExtractNoduleCube(
            size=self.size, spacing_mm=spacing_mm, pad_value=pad_value, hu_window=self.hu_window
        )

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        key = self.keys[0]
        item = dict(data)
        source = item.get(key, "")
        out: dict[Hashable, Any] = {
            self.id_key: str(item.get(self.id_key, "")),
            self.source_key: str(source) if isinstance(source, (str, os.PathLike)) else f"<{type(source).__name__}>",
            self.center_key: self._centre_text(item.get(self.center_key)),
            self.error_key: "",
        }
        try:
            if item.get("_item_error"):
                raise DataError(str(item["_item_error"]))
            if self.label_key is not None:
                out[self.label_key] = -1
                out[self.label_key] = self._label(item)
            cube = self._cube(item, key)
        except Exception as err:  # noqa: BLE001 - any failure of one nodule is reported, not raised
            out[self.error_key] = describe_error(err)
            logger.warning("nodule %s: %s", out[self.id_key], out[self.error_key])
            cube = torch.zeros((1, self.size, self.size, self.size), dtype=torch.float32)
        out[key] = cube
        return out

    @staticmethod
    def _centre_text(centre: Any) -> str:
        if centre is None:
            return ""
        try:
            return json.dumps([float(v) for v in centre])
        except (TypeError, ValueError):
            return str(centre)

    def _label(self, item: Mapping[Hashable, Any]) -> int:
        label = item.get(self.label_key)
        if label is None:
            raise DataError(f"the datalist entry has no {self.label_key!r}; evaluation needs a 0/1 label per nodule")
        try:
            value = int(label)
        except (TypeError, ValueError):
            value = -1
        if value not in (0, 1) or value != label:
            raise DataError(f"label must be 0 (benign) or 1 (malignant), got {label!r}")
        return value

    def _cube(self, item: Mapping[Hashable, Any], key: Hashable) -> torch.Tensor:
        source = item.get(key)
        if not isinstance(source, (str, os.PathLike)) or not str(source):
            raise DataError(f"the datalist entry has no {key!r} path (a CT scan with center_mm, or a cube)")
        path = Path(source)
        if not path.exists():
            raise DataError(
                "file or folder not found; relative paths are resolved against dataset_dir (default: the "
                "datalist's folder)",
                path=str(path),
            )
        centre = item.get(self.center_key)
        if centre is not None:
            return self._cube_from_scan(path, centre)
        return self._cube_from_file(path)

    def _cube_from_scan(self, path: Path, centre: Any) -> torch.Tensor:
        try:
            centre_mm = np.asarray([float(v) for v in centre], dtype=np.float64)
        except (TypeError, ValueError):
            centre_mm = np.zeros(0)
        if centre_mm.shape != (3,) or not np.all(np.isfinite(centre_mm)):
            raise DataError(f"center_mm must be three finite numbers [x, y, z] in world mm (LPS), got {centre!r}")
        if path.is_file() and path.name.lower().endswith(".npy"):
            raise DataError("a .npy file is a ready cube, not a scan: drop center_mm for cubes", path=str(path))
        reader = SimpleITKReader()
        array, meta = reader.get_data(reader.read(str(path)))
        spatial_shape = tuple(int(n) for n in np.asarray(meta.get(MetaKeys.SPATIAL_SHAPE, ())).reshape(-1))
        channel_dim = meta.get(MetaKeys.ORIGINAL_CHANNEL_DIM)
        is_scalar = isinstance(channel_dim, float) and math.isnan(channel_dim)
        if array.ndim != 3 or len(spatial_shape) != 3 or not is_scalar:
            raise DataError(
                f"expected a single-channel 3D CT volume, got an image of shape {tuple(array.shape)}; give a CT "
                "series folder, .mhd or NIfTI scan",
                path=str(path),
            )
        modality = str(meta.get(_MODALITY_TAG, "") or _series_modality(path)).strip().upper()
        if modality and modality != "CT":
            raise DataError(f"the DICOM modality is {modality!r}, not CT; the model only reads CT", path=str(path))
        lowest = float(np.min(array))
        if not math.isfinite(lowest) or lowest > self.min_air_hu:
            raise DataError(
                f"this image does not look like a CT in Hounsfield units: its lowest value is {lowest:g}, but a chest "
                f"CT holds air near -1000 HU (at or below {self.min_air_hu:g}); give a CT with the rescale "
                "slope/intercept applied",
                path=str(path),
            )
        scan = MetaTensor(torch.as_tensor(np.asarray(array, dtype=np.float32)), affine=meta[MetaKeys.AFFINE], meta=meta)
        try:
            cube = self.extractor(scan, centre_mm)
        except DataError as err:
            raise DataError(err.reason, path=str(path)) from err
        return torch.as_tensor(cube.as_tensor() if isinstance(cube, MetaTensor) else cube, dtype=torch.float32)

    def _cube_from_file(self, path: Path) -> torch.Tensor:
        name = path.name.lower()
        if path.is_dir() or name.endswith(SCAN_SUFFIXES):
            raise DataError(
                'this is a CT scan: give the nodule centre as "center_mm": [x, y, z] (world mm, LPS) in its entry',
                path=str(path),
            )
        if name.endswith(".npy"):
            array = np.load(path, allow_pickle=False)
        elif name.endswith((".nii", ".nii.gz")):
            reader = NibabelReader()
            array, _ = reader.get_data(reader.read(str(path)))
        else:
            raise DataError(
                f"unsupported file type; give a cube as {' or '.join(CUBE_SUFFIXES)}, or a scan with center_mm",
                path=str(path),
            )
        array = np.asarray(array, dtype=np.float32)
        size = self.size
        if array.shape == (1, size, size, size):
            array = array[0]
        if array.shape != (size, size, size):
            raise DataError(
                f"the cube has shape {tuple(array.shape)}, expected ({size}, {size}, {size}) (1 mm voxels); for a "
                "whole scan give center_mm",
                path=str(path),
            )
        if not np.all(np.isfinite(array)):
            raise DataError("the cube contains NaN or infinite values", path=str(path))
        low, high = float(array.min()), float(array.max())
        if low < -self.unit_tolerance or high > 1.0 + self.unit_tolerance:
            raise DataError(
                f"the cube's values span [{low:g}, {high:g}], outside [0, 1]: cubes must hold HU windowed to "
                f"{list(self.hu_window)} and scaled to [0, 1] (as `naslung prepare` writes them); give the scan "
                "with center_mm instead of a HU cube",
                path=str(path),
            )
        return torch.from_numpy(np.ascontiguousarray(array[None]))
