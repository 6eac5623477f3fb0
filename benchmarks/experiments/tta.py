"""Does averaging a trained network over the cube's symmetries raise its validation AUC? Paired, on validation only.

Run: ``python benchmarks/experiments/tta.py RUN [RUN ...] [--out FILE]``.

For every trained (network, fold) of each run folder (``RUN/train/<network>/fold_<k>/``), the network the pipeline
keeps (``checkpoints/best_model.pt``) predicts the fold's *validation* nodules (``val_predictions.csv``: the split
carved from the training folds; the held-out test fold is never read) three ways:

- ``none``: the centred cube as evaluated today (checked against ``val_predictions.csv``);
- ``flips``: the mean malignancy probability over the 8 flips of the cube's three axes;
- ``cube``: the mean over all 48 symmetries of the cube (the flips times the 6 axis permutations), every one of them
  exact on the 1 mm grid and reachable by the training augmentation (flips and quarter turns in each plane).

Printed and written to ``--out`` (default ``benchmarks/results/recipe/tta.json``): each model's validation AUC per way
and the paired differences to ``none`` (mean, and how many models gain), which separate the effect from the spread
between trained networks that an unpaired comparison would face.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from naslung.pipeline.atomic_io import write_json
from naslung.pipeline.data.datalists import read_manifest
from naslung.pipeline.run.members import load_trained_network
from naslung.transforms import eval_transforms

RESULTS_FILE = Path(__file__).resolve().parents[1] / "results" / "recipe" / "tta.json"


#: The 48 symmetries of the cube as (axis permutation, flipped axes) over the spatial dims 2-4 of a ``(B, 1, X, Y, Z)``
#: batch, identity first and the 8 flips of the unpermuted cube before the rest, so each way below is a prefix.
SYMMETRIES: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...] = tuple(
    ((0, 1, *(p + 2 for p in perm)), tuple(a + 2 for a in axes))
    for perm in itertools.permutations(range(3))
    for r in range(4)
    for axes in itertools.combinations(range(3), r)
)
#: How many leading :data:`SYMMETRIES` each way averages.
WAYS: dict[str, int] = {"none": 1, "flips": 8, "cube": 48}


@torch.inference_mode()
def view_probabilities(network: torch.nn.Module, cubes: torch.Tensor) -> np.ndarray:
    """Softmax probability of malignancy of ``cubes`` ``(N, 1, 32, 32, 32)`` under each of :data:`SYMMETRIES`:
    ``(48, N)``."""
    rows = []
    for perm, flip in SYMMETRIES:
        view = cubes.permute(perm)
        if flip:
            view = view.flip(flip)
        rows.append(torch.softmax(network(view.contiguous()).float(), dim=1)[:, 1])
    return torch.stack(rows).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=RESULTS_FILE)
    args = parser.parse_args()
    torch.set_num_threads(2)
    transform = eval_transforms()
    rows = []
    for run in args.runs:
        by_id = {str(d["nodule_id"]): d for d in read_manifest(run / "data" / "manifest.csv")}
        for fold_dir in sorted(run.glob("train/*/fold_*")):
            with open(fold_dir / "val_predictions.csv", newline="", encoding="utf-8") as handle:
                saved = list(csv.DictReader(handle))
            items = [transform(dict(by_id[r["nodule_id"]])) for r in saved]
            cubes = torch.stack([torch.as_tensor(item["image"]) for item in items]).float()
            labels = np.array([int(r["label"]) for r in saved])
            network = load_trained_network(fold_dir)
            row = {"run": str(run), "model": f"{fold_dir.parent.name}/{fold_dir.name}", "n_val": len(saved)}
            views = view_probabilities(network, cubes)
            for kind, count in WAYS.items():
                prob = views[:count].mean(0)
                row[f"auc_{kind}"] = float(roc_auc_score(labels, prob))
                row[f"accuracy_{kind}"] = float(((prob > 0.5) == labels).mean())
                if kind == "none":
                    row["max_abs_diff_to_saved"] = float(
                        np.abs(prob - np.array([float(r["probability"]) for r in saved])).max()
                    )
            rows.append(row)
            print(
                f"{row['model']:36s} n={row['n_val']:3d} AUC none {row['auc_none']:.3f} flips {row['auc_flips']:.3f} "
                f"cube {row['auc_cube']:.3f}  (check {row['max_abs_diff_to_saved']:.1e})",
                flush=True,
            )
    summary = {}
    for kind in ("flips", "cube"):
        for metric in ("auc", "accuracy"):
            diffs = np.array([r[f"{metric}_{kind}"] - r[f"{metric}_none"] for r in rows])
            summary[f"{metric}_{kind}_minus_none"] = {
                "mean": float(diffs.mean()),
                "std": float(diffs.std(ddof=1)) if len(diffs) > 1 else 0.0,
                "gains": int((diffs > 0).sum()),
                "losses": int((diffs < 0).sum()),
                "models": len(diffs),
            }
    print(json.dumps(summary, indent=1))
    write_json(args.out, {"summary": summary, "models": rows})


if __name__ == "__main__":
    main()
