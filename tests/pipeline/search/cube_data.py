"""Generated cube data sets shared by the search tests (imported from the test modules of this folder)."""

from __future__ import annotations

import numpy as np

from naslung.pipeline.atomic_io import write_csv


def make_cubes(root, n, folds, seed=0):
    """``n`` 32³ cubes over ``folds`` folds (one patient each): malignant ones hold a larger bright sphere."""
    (root / "cubes").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    radius = np.sqrt(((np.mgrid[:32, :32, :32] - 15.5) ** 2).sum(0))
    rows = []
    for k in range(n):
        label = k % 2
        cube = rng.normal(0.2, 0.05, (32, 32, 32)).astype(np.float32)
        cube[radius < (8 if label else 4)] += 0.5
        np.save(root / "cubes" / f"n{k}.npy", cube)
        row = dict(nodule_id=f"n{k}", patient_id=f"p{k}", series_uid="s", image=f"cubes/n{k}.npy", label=label)
        rows.append({**row, "fold": 1 + (k // 2) % folds})
    write_csv(root / "manifest.csv", rows, list(rows[0]))
    return root
