"""naslung.transforms: MONAI-style array and dictionary transforms for nodule cubes."""

from __future__ import annotations

from naslung.transforms.nodule_cube import (
    HU_WINDOW,
    ExtractNoduleCube,
    ExtractNoduleCubeD,
    ExtractNoduleCubed,
    ExtractNoduleCubeDict,
    cube_affine,
    cut_cube_hu,
    hu_to_unit,
    resample_scan_hu,
    sample_cube_hu,
)
from naslung.transforms.pipelines import CUBE_SIZE, PADDED_SIZE, eval_transforms, train_transforms
from naslung.transforms.readers import SimpleITKReader

__all__ = [
    "HU_WINDOW",
    "CUBE_SIZE",
    "PADDED_SIZE",
    "hu_to_unit",
    "sample_cube_hu",
    "resample_scan_hu",
    "cut_cube_hu",
    "cube_affine",
    "ExtractNoduleCube",
    "ExtractNoduleCubed",
    "ExtractNoduleCubeD",
    "ExtractNoduleCubeDict",
    "SimpleITKReader",
    "train_transforms",
    "eval_transforms",
]
