"""Same seed, same machine, same selection? Three quick-profile searches side by side, and what their scores rank.

Run ``python benchmarks/search_determinism.py [--data DIR] [--out benchmarks/results/search_determinism.json]``.

On the quick profile's search settings (``pipeline/configs/profile_quick.json``) and data (``--data``: a prepared
folder with ``manifest.csv``; otherwise the quick profile's subsample of the embedded cohort, rendered once into a
temporary folder), it runs the search step three times, each in a fresh folder with the same seed:

1. ``table``: with a fresh latency table (measures every latency and stores it);
2. ``table again``: with the same table (measures nothing);
3. ``no table``: without a table (measures again, as every search did before the table).

It prints and writes whether runs 1 and 2 trained and selected the same networks with the same scores and
latencies, how far run 3's latencies moved from run 1's, and, per candidate, the old score (F1 of the checkpoint,
which training picks by F1) beside the new one (AUC at the best validation epoch).
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from naslung.pipeline.atomic_io import write_json
from naslung.pipeline.search.runner import run_search_step

__all__ = ["quick_data", "run_once", "main"]

KEPT = ("spec", "latency_ms", "auc", "f1", "accuracy", "best_epoch", "checkpoint_epoch", "iteration")


def quick_data(root: Path) -> Path:
    """The quick profile's subsample of the embedded cohort, rendered into ``root`` (kept for reruns), no scans."""
    from naslung.pipeline.data.cohort_table import load_default_cohort
    from naslung.pipeline.data.embedded import render_embedded
    from naslung.pipeline.run.job import load_profile, subsample_cohort

    settings = load_profile("quick")["prepare"]
    rows = subsample_cohort(load_default_cohort(), settings.get("subsample_nodules"), int(settings.get("seed", 0)))
    if not (root / "manifest.csv").is_file():
        render_embedded(root, rows=rows, n_scans=0, seed=int(settings.get("seed", 0)), workers=2)
    return root


def run_once(name: str, out: Path, config: dict[str, Any], data: Path) -> dict[str, Any]:
    """One search step into ``out``; its wall time, latency counts, selection and journal (``KEPT`` fields)."""
    start = time.perf_counter()
    summary = run_search_step(out, config, data_dir=data)
    seconds = time.perf_counter() - start
    journal = [json.loads(line) for line in (out / "journal.jsonl").read_text(encoding="utf-8").splitlines()]
    selected = json.loads((out / "selected.json").read_text(encoding="utf-8"))
    checkpoints = {}
    for metrics_path in (out / "candidates").glob("*/all/metrics.json"):
        config_path = metrics_path.parent / "config.json"
        arch = json.loads(config_path.read_text(encoding="utf-8"))["arch"]
        checkpoints[arch] = json.loads(metrics_path.read_text(encoding="utf-8"))["val"]
    return {
        "name": name,
        "seconds": seconds,
        "latency_measured": summary["latency"]["measured"],
        "latency_from_table": summary["latency"]["from_table"],
        "pruned": summary["pruned"],
        "selected": selected["specs"],
        "journal": [{k: r.get(k) for k in KEPT} for r in journal],
        "checkpoint_val": checkpoints,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="prepared data folder (manifest.csv); default: the quick subsample")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "search_determinism.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from naslung.pipeline.run.job import load_profile

    profile = load_profile("quick")
    data = args.data or quick_data(Path(tempfile.gettempdir()) / "naslung_quick_data")
    config = {**profile["search"], "test_folds": profile["train"].get("folds", [0, 1, 2, 3, 4])}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        table = str(root / "latency.json")
        runs = [
            run_once("table", root / "run1", {**config, "latency_table": table}, data),
            run_once("table again", root / "run2", {**config, "latency_table": table}, data),
            run_once("no table", root / "run3", {**config, "latency_table": False}, data),
        ]
    first, again, fresh = runs
    same_1_2 = first["journal"] == again["journal"] and first["selected"] == again["selected"]
    common = {r["spec"]: r["latency_ms"] for r in fresh["journal"]}
    moved = [
        abs(common[r["spec"]] - r["latency_ms"]) / r["latency_ms"] for r in first["journal"] if r["spec"] in common
    ]
    candidates = [
        {
            "spec": r["spec"],
            "old_score_checkpoint_f1": first["checkpoint_val"].get(r["spec"], {}).get("f1"),
            "new_score_best_epoch_auc": r["auc"],
            "best_epoch": r["best_epoch"],
            "checkpoint_epoch": r["checkpoint_epoch"],
        }
        for r in first["journal"]
    ]
    result = {
        "config": config,
        "data": str(data),
        "runs": runs,
        "same_seed_same_table_identical": same_1_2,
        "no_table_same_trained_specs": [r["spec"] for r in fresh["journal"]] == [r["spec"] for r in first["journal"]],
        "no_table_same_selection": fresh["selected"] == first["selected"],
        "no_table_latency_relative_change_max": max(moved) if moved else None,
        "candidates": candidates,
        "distinct_old_scores": len({c["old_score_checkpoint_f1"] for c in candidates}),
        "distinct_new_scores": len({c["new_score_best_epoch_auc"] for c in candidates}),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, result)
    print(f"{'run':<12} {'wall s':>7} {'timed':>6} {'reused':>6} {'pruned':>6}  selected")
    for run in runs:
        print(
            f"{run['name']:<12} {run['seconds']:>7.1f} {run['latency_measured']:>6} {run['latency_from_table']:>6} "
            f"{run['pruned']!s:>6}  {', '.join(run['selected'])}"
        )
    print(f"same seed + shared latency table: identical journal and selection: {same_1_2}")
    moved_pct = 100 * (result["no_table_latency_relative_change_max"] or 0)
    print(
        f"without the table: same trained specs {result['no_table_same_trained_specs']}, same selection "
        f"{result['no_table_same_selection']}, latency moved up to {moved_pct:.1f}%"
    )
    print(f"{'candidate':<28} {'old: ckpt F1':>12} {'new: best AUC':>13} {'epoch':>5}")
    for c in candidates:
        print(
            f"{c['spec']:<28} {c['old_score_checkpoint_f1']:>12.3f} {c['new_score_best_epoch_auc']:>13.3f} "
            f"{c['best_epoch']!s:>5}"
        )
    print(f"distinct scores: old {result['distinct_old_scores']}, new {result['distinct_new_scores']} -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
