"""Reference models the networks must beat or approach: the diameter rule and the readers' ratings ceiling.

Neither looks at an image; both are fitted per held-out test fold on the other folds only (the nodules the
networks may train on) and scored on exactly the nodules the ensemble is tested on:

* **diameter rule**: "malignant if ``diameter_mm`` > t", t chosen to maximise accuracy on the training folds
  (see :func:`fit_diameter_threshold`); its score for the ROC AUC is the diameter itself.
* **ratings ceiling**: scikit-learn logistic regression on standardised inputs, the readers' 8 non-malignancy
  ratings (:data:`CEILING_RATINGS`, each averaged over the nodule's readers) plus ``diameter_mm``. These are the
  cues the embedded data's renderer draws, so this is the ceiling for a network that reads them perfectly from the
  cube: **reader ratings, not an image model**. The malignancy rating, which defines the label, is never an input.

Inputs of a run: ``RUN/data/manifest.csv`` (``nodule_id``, ``label``, ``fold``, ``diameter_mm``) and the ratings of
the same nodules, read from ``RUN/data/cohort.csv`` when the data folder holds one (``naslung prepare cohort
--out RUN/data`` writes it), else from the packaged default cohort when it holds every manifest nodule with the same
diameter and label (the embedded data, and raw data prepared against the default cohort). Without ratings the
ceiling is omitted with the reason logged and recorded.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from naslung.pipeline.data.cohort_table import (
    CHARACTERISTICS,
    DEFAULT_COHORT_FILE,
    load_default_cohort,
    read_cohort_csv,
)
from naslung.pipeline.errors import DataError
from naslung.pipeline.metrics import BINARY_METRICS, DEFAULT_THRESHOLD, binary_metrics, summarise_folds

__all__ = [
    "CEILING_RATINGS",
    "CEILING_FEATURES",
    "DIAMETER_RULE",
    "RATINGS_CEILING",
    "REFERENCE_MODELS",
    "REFERENCE_LABELS",
    "REFERENCE_METHODS",
    "ReferenceData",
    "mean_ratings",
    "reference_data_from_rows",
    "load_reference_data",
    "reference_input_files",
    "fit_diameter_threshold",
    "fit_ratings_ceiling",
    "evaluate_reference_models",
    "fold_differences",
]

logger = logging.getLogger(__name__)

#: The readers' ratings the ceiling reads: every LIDC characteristic except malignancy (which defines the label).
CEILING_RATINGS: tuple[str, ...] = tuple(name for name in CHARACTERISTICS if name != "malignancy")
#: Inputs of the ratings ceiling, in column order.
CEILING_FEATURES: tuple[str, ...] = (*CEILING_RATINGS, "diameter_mm")

#: Keys of the reference models in results (``metrics.json``, ``anchors.json``).
DIAMETER_RULE = "diameter_rule"
RATINGS_CEILING = "ratings_ceiling"
REFERENCE_MODELS: tuple[str, ...] = (DIAMETER_RULE, RATINGS_CEILING)
#: How tables and the report name them.
REFERENCE_LABELS: dict[str, str] = {
    DIAMETER_RULE: "diameter rule (malignant if diameter > t, t fitted on the training folds)",
    RATINGS_CEILING: "ratings ceiling: logistic regression on the readers' 8 ratings + diameter "
    "(reader ratings, not an image model)",
}

#: Their method names in the results table beside the paper's (no parameters, no latency: they read no image).
REFERENCE_METHODS: dict[str, str] = {
    DIAMETER_RULE: "Diameter rule, no image (ours)",
    RATINGS_CEILING: "Ratings ceiling: reader ratings, not an image model (ours)",
}

_MANIFEST_COLUMNS = ("nodule_id", "label", "fold", "diameter_mm")
_DIAMETER_TOLERANCE_MM = 0.01


@dataclasses.dataclass(frozen=True)
class ReferenceData:
    """What the reference models read about each nodule of a run (or of a cohort).

    Args:
        nodule_ids: ``(N,)`` ids.
        labels: ``(N,)`` 0 (benign) / 1 (malignant).
        folds: ``(N,)`` cross-validation folds.
        diameter_mm: ``(N,)`` diameters; None when some nodule has none (the diameter rule is then omitted).
        ratings: ``(N, 8)`` reader-mean ratings in :data:`CEILING_RATINGS` order; None when not available.
        ratings_source: where the ratings were read (a file, "the packaged default cohort"), or why they are
            missing when ``ratings`` is None.
        diameter_note: why ``diameter_mm`` is None ("" otherwise).
    """

    nodule_ids: tuple[str, ...]
    labels: np.ndarray
    folds: np.ndarray
    diameter_mm: np.ndarray | None
    ratings: np.ndarray | None
    ratings_source: str
    diameter_note: str = ""

    def index(self, nodule_ids: Sequence[str]) -> np.ndarray:
        """Row positions of ``nodule_ids``.

        Raises:
            DataError: naming the ids that are not in this data.
        """
        lookup = {n: i for i, n in enumerate(self.nodule_ids)}
        missing = [str(n) for n in nodule_ids if str(n) not in lookup]
        if missing:
            raise DataError(
                f"{len(missing)} nodule(s) are not in the data folder's manifest (e.g. {missing[:3]}); the networks "
                "were scored on another manifest: re-run training on this data folder"
            )
        return np.array([lookup[str(n)] for n in nodule_ids], dtype=np.int64)


def mean_ratings(row: Mapping[str, Any], names: Sequence[str] = CEILING_RATINGS) -> np.ndarray:
    """The readers' mean of each rating in ``names`` for one cohort row.

    Args:
        row: a cohort row whose rating columns are ``;``-joined integers, one per reader (a number is taken as is).
        names: the rating columns.

    Returns:
        ``(len(names),)`` float64 means.

    Raises:
        DataError: a column is missing or empty, or holds something other than numbers.
    """
    values = []
    for name in names:
        cell = row.get(name)
        if cell is None or str(cell).strip() == "":
            raise DataError(f"nodule {row.get('nodule_id')!r} has no {name!r} ratings; the cohort lacks ratings")
        try:
            parts = [float(part) for part in str(cell).split(";") if part.strip()]
        except ValueError:
            raise DataError(f"nodule {row.get('nodule_id')!r}: {name} ratings {cell!r} are not numbers") from None
        values.append(float(np.mean(parts)))
    return np.asarray(values, dtype=np.float64)


def _number(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number


def _ratings_table(rows: Sequence[Mapping[str, Any]]) -> dict[str, tuple[np.ndarray, float, int]]:
    """``{nodule_id: (ratings (8,), diameter_mm, label)}``; DataError when a row lacks ratings."""
    return {
        str(r["nodule_id"]): (mean_ratings(r), _number(r.get("diameter_mm")), int(_number(r.get("label"))))
        for r in rows
    }


def _match_ratings(
    nodule_ids: Sequence[str],
    diameter_mm: np.ndarray,
    labels: np.ndarray,
    rows: Sequence[Mapping[str, Any]],
    source: str,
) -> tuple[np.ndarray | None, str]:
    """Ratings of ``nodule_ids`` from cohort ``rows``, or None and the reason they cannot be used."""
    if not rows or any(name not in rows[0] for name in CEILING_RATINGS):
        return None, f"{source} has no rating columns ({', '.join(CEILING_RATINGS)})"
    try:
        table = _ratings_table(rows)
    except DataError as err:
        return None, f"{source}: {err}"
    missing = [n for n in nodule_ids if n not in table]
    if missing:
        return None, f"{source} lacks {len(missing)} nodule(s) of the manifest (e.g. {missing[:3]})"
    found = [table[n] for n in nodule_ids]
    differ = [
        n
        for n, (_, d, y), d_run, y_run in zip(nodule_ids, found, diameter_mm, labels, strict=True)
        if y != y_run or (math.isfinite(d) and math.isfinite(d_run) and abs(d - d_run) > _DIAMETER_TOLERANCE_MM)
    ]
    if differ:
        return None, (
            f"{source} gives {len(differ)} nodule(s) another diameter or label than the manifest (e.g. {differ[:3]}); "
            "it is not the cohort the data was prepared from"
        )
    return np.stack([f[0] for f in found]), source


def reference_data_from_rows(rows: Sequence[Mapping[str, Any]], source: str = "the cohort rows") -> ReferenceData:
    """:class:`ReferenceData` of cohort rows (``nodule_id``, ``label``, ``fold``, ``diameter_mm`` and the ratings).

    Args:
        rows: e.g. :func:`naslung.pipeline.data.cohort_table.load_default_cohort`.
        source: how to name them in messages and results.

    Raises:
        DataError: no rows, or a row without a fold or label.
    """
    if not rows:
        raise DataError(f"{source} hold no nodules")
    ids = [str(r["nodule_id"]) for r in rows]
    labels, folds = _labels_and_folds(rows, source)
    diameter, note = _diameters(rows, source)
    ratings, ratings_source = _match_ratings(ids, _nan_if_none(diameter, len(ids)), labels, rows, source)
    if ratings is None:
        logger.warning("ratings ceiling omitted: %s", ratings_source)
    return ReferenceData(tuple(ids), labels, folds, diameter, ratings, ratings_source, note)


def _nan_if_none(diameter: np.ndarray | None, n: int) -> np.ndarray:
    return np.full(n, math.nan) if diameter is None else diameter


def _labels_and_folds(rows: Sequence[Mapping[str, Any]], source: str) -> tuple[np.ndarray, np.ndarray]:
    labels, folds = [], []
    for line, row in enumerate(rows, start=2):
        label, fold = _number(row.get("label")), _number(row.get("fold"))
        if label not in (0.0, 1.0) or not math.isfinite(fold):
            raise DataError(
                f"row {line} (nodule {row.get('nodule_id')!r}): label {row.get('label')!r} / fold {row.get('fold')!r} "
                "must be 0/1 and an integer",
                path=source,
            )
        labels.append(int(label))
        folds.append(int(fold))
    return np.asarray(labels, dtype=np.int64), np.asarray(folds, dtype=np.int64)


def _diameters(rows: Sequence[Mapping[str, Any]], source: str) -> tuple[np.ndarray | None, str]:
    diameter = np.array([_number(r.get("diameter_mm")) for r in rows], dtype=np.float64)
    bad = [str(r.get("nodule_id")) for r, d in zip(rows, diameter, strict=True) if not math.isfinite(d)]
    if bad:
        note = f"{source}: {len(bad)} nodule(s) have no diameter_mm (e.g. {bad[:3]})"
        logger.warning("diameter rule omitted: %s", note)
        return None, note
    return diameter, ""


def load_reference_data(data_dir: str | os.PathLike) -> ReferenceData:
    """:class:`ReferenceData` of a run's data folder (``RUN/data``): its manifest plus the readers' ratings.

    Ratings come from ``data_dir/cohort.csv`` when present, else from the packaged default cohort when it holds
    every manifest nodule with the same diameter (within 0.01 mm) and label; otherwise ``ratings`` is None and
    ``ratings_source`` says why (logged as a warning; not an error).

    Args:
        data_dir: the folder of ``manifest.csv`` (``RUN/data``).

    Raises:
        DataError: ``manifest.csv`` is missing, lacks one of ``nodule_id``, ``label``, ``fold``, ``diameter_mm``, or
            holds a bad label or fold.
    """
    folder = Path(data_dir)
    manifest = folder / "manifest.csv"
    if not manifest.is_file():
        raise DataError(
            "manifest not found; run `naslung prepare embedded|dicom|luna16|lidc` first", path=str(manifest)
        )
    with open(manifest, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in _MANIFEST_COLUMNS if c not in (reader.fieldnames or [])]
        rows = list(reader)
    if missing:
        raise DataError(
            f"missing column(s) {missing}; the reference models need {list(_MANIFEST_COLUMNS)}", path=str(manifest)
        )
    if not rows:
        raise DataError("manifest has no rows", path=str(manifest))
    ids = [str(r["nodule_id"]) for r in rows]
    labels, folds = _labels_and_folds(rows, str(manifest))
    diameter, note = _diameters(rows, str(manifest))
    cohort_file = folder / "cohort.csv"
    if cohort_file.is_file():
        cohort_rows, source = read_cohort_csv(cohort_file), str(cohort_file)
    else:
        cohort_rows, source = load_default_cohort(), "the packaged default cohort"
    ratings, ratings_source = _match_ratings(ids, _nan_if_none(diameter, len(ids)), labels, cohort_rows, source)
    if ratings is None:
        logger.warning("ratings ceiling omitted: %s", ratings_source)
    return ReferenceData(tuple(ids), labels, folds, diameter, ratings, ratings_source, note)


def reference_input_files(data_dir: str | os.PathLike) -> list[Path]:
    """The files :func:`load_reference_data` reads for ``data_dir`` that exist (for up-to-date checks)."""
    folder = Path(data_dir)
    cohort = folder / "cohort.csv"
    if not cohort.is_file():
        cohort = Path(__file__).resolve().parents[1] / DEFAULT_COHORT_FILE  # naslung.pipeline's package data
    return [path for path in (folder / "manifest.csv", cohort) if path.is_file()]


def fit_diameter_threshold(diameter_mm: Any, labels: Any) -> tuple[float, float]:
    """The threshold t of "malignant if diameter > t" that maximises accuracy on the given (training) nodules.

    Candidate thresholds are the midpoints between consecutive distinct diameters, so t never sits on a training
    value; when several candidates reach the best accuracy, the middle one of them is taken (the lower middle of
    an even number), which keeps t deterministic and away from the edges of a flat optimum.

    Args:
        diameter_mm: ``(N,)`` diameters of the training nodules.
        labels: ``(N,)`` 0/1 labels.

    Returns:
        ``(threshold_mm, training_accuracy)``.

    Raises:
        DataError: fewer than two distinct diameters (no threshold separates anything), or lengths that differ.
    """
    diameter = np.asarray(diameter_mm, dtype=np.float64).reshape(-1)
    truth = np.asarray(labels).reshape(-1).astype(np.int64)
    if diameter.shape != truth.shape:
        raise DataError(f"{diameter.size} diameters but {truth.size} labels")
    values = np.unique(diameter)
    if values.size < 2:
        raise DataError(f"the training nodules have {values.size} distinct diameter(s); a threshold needs two")
    cuts = (values[:-1] + values[1:]) / 2.0
    benign, malignant = np.sort(diameter[truth == 0]), np.sort(diameter[truth == 1])
    correct = np.searchsorted(benign, cuts, side="right") + (malignant.size - np.searchsorted(malignant, cuts, "right"))
    best = np.flatnonzero(correct == correct.max())
    chosen = int(best[(best.size - 1) // 2])
    return float(cuts[chosen]), float(correct[chosen]) / truth.size


def fit_ratings_ceiling(features: Any, labels: Any) -> Any:
    """Fit the ratings ceiling: standardisation then scikit-learn's ``LogisticRegression`` (L2, C = 1, lbfgs).

    Args:
        features: ``(N, 9)`` inputs in :data:`CEILING_FEATURES` order (8 mean ratings, then ``diameter_mm``).
        labels: ``(N,)`` 0/1 labels.

    Returns:
        the fitted scikit-learn pipeline (``predict_proba(X)[:, 1]`` is the probability of malignancy).

    Raises:
        DataError: ``features`` is not ``(N, 9)`` or the labels hold one class only.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    matrix = np.asarray(features, dtype=np.float64)
    truth = np.asarray(labels).reshape(-1).astype(np.int64)
    if matrix.ndim != 2 or matrix.shape != (truth.size, len(CEILING_FEATURES)):
        raise DataError(f"ceiling features of shape {matrix.shape}; expected ({truth.size}, {len(CEILING_FEATURES)})")
    if np.unique(truth).size < 2:
        raise DataError("the training nodules of the ratings ceiling hold one class only")
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(matrix, truth)


def _fold_sets(
    data: ReferenceData, fold_nodules: Mapping[int, Sequence[str]] | None
) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """``(fold, train rows, test rows)``: train is every nodule of another fold that is not a test nodule."""
    if fold_nodules is None:
        fold_nodules = {
            int(f): [data.nodule_ids[i] for i in np.flatnonzero(data.folds == f)] for f in np.unique(data.folds)
        }
    sets = []
    for fold in sorted(int(f) for f in fold_nodules):
        test = data.index(fold_nodules[fold])
        if test.size == 0:
            raise DataError(f"fold {fold} has no test nodules")
        train_mask = data.folds != fold
        train_mask[test] = False  # never fit on a test nodule, whatever fold the manifest gives it
        sets.append((fold, np.flatnonzero(train_mask), test))
    return sets


def _summary(per_fold: list[dict[str, Any]]) -> dict[str, Any]:
    return summarise_folds(per_fold, keys=BINARY_METRICS)


def evaluate_reference_models(
    data: ReferenceData,
    fold_nodules: Mapping[int, Sequence[str]] | None = None,
    test_labels: Mapping[int, Sequence[int]] | None = None,
) -> dict[str, dict[str, Any]]:
    """Fit both reference models on each held-out fold's training folds and score them on its test nodules.

    Args:
        data: the nodules (:func:`load_reference_data` or :func:`reference_data_from_rows`).
        fold_nodules: ``{fold: nodule ids}`` of the test sets (the ensemble's); None: every fold of ``data``,
            each tested on all its nodules.
        test_labels: ``{fold: labels}`` in the order of ``fold_nodules`` (the ensemble's); checked against
            ``data``'s labels.

    Returns:
        ``{"diameter_rule": record, "ratings_ceiling": record}``; a record holds ``label``, ``inputs``,
        ``per_fold`` (``fold``, ``n_train``, the metrics of :func:`naslung.pipeline.metrics.binary_metrics` as
        fractions, and ``threshold_mm`` for the rule) and ``summary`` (mean ± sample std over folds), or
        ``omitted`` with the reason when the model cannot be fitted on these data.

    Raises:
        DataError: a test nodule is missing from ``data``, or its label differs from ``test_labels``.
    """
    sets = _fold_sets(data, fold_nodules)
    if test_labels is not None:
        for fold, _, test in sets:
            given = np.asarray(test_labels[fold]).astype(np.int64)
            if not np.array_equal(given, data.labels[test]):
                raise DataError(
                    f"fold {fold}: the test labels differ from the manifest's; the networks were scored on another "
                    "manifest: re-run training on this data folder"
                )
    rule: dict[str, Any] = {"label": REFERENCE_LABELS[DIAMETER_RULE], "inputs": ["diameter_mm"]}
    if data.diameter_mm is None:
        rule["omitted"] = data.diameter_note
    else:
        per_fold = []
        for fold, train, test in sets:
            threshold_mm, train_accuracy = fit_diameter_threshold(data.diameter_mm[train], data.labels[train])
            metrics = binary_metrics(data.labels[test], data.diameter_mm[test], threshold=threshold_mm)
            per_fold.append(
                {
                    "fold": fold,
                    "n_train": int(train.size),
                    "threshold_mm": threshold_mm,
                    "train_accuracy": train_accuracy,
                }
                | metrics
            )
            logger.info("diameter rule, fold %d: t = %.2f mm, accuracy %.4f", fold, threshold_mm, metrics["accuracy"])
        rule.update(per_fold=per_fold, summary=_summary(per_fold))
    ceiling: dict[str, Any] = {"label": REFERENCE_LABELS[RATINGS_CEILING], "inputs": list(CEILING_FEATURES)}
    if data.ratings is None or data.diameter_mm is None:
        ceiling["omitted"] = data.ratings_source if data.ratings is None else data.diameter_note
    else:
        features = np.column_stack([data.ratings, data.diameter_mm])
        per_fold = []
        for fold, train, test in sets:
            model = fit_ratings_ceiling(features[train], data.labels[train])
            probability = model.predict_proba(features[test])[:, 1]
            metrics = binary_metrics(data.labels[test], probability, threshold=DEFAULT_THRESHOLD)
            per_fold.append({"fold": fold, "n_train": int(train.size)} | metrics)
        ceiling.update(ratings_source=data.ratings_source, per_fold=per_fold, summary=_summary(per_fold))
    return {DIAMETER_RULE: rule, RATINGS_CEILING: ceiling}


def fold_differences(
    per_fold: Sequence[Mapping[str, Any]],
    reference_per_fold: Sequence[Mapping[str, Any]],
    keys: Sequence[str] = ("accuracy", "auc"),
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Per-fold ``model - reference`` of ``keys`` (fractions), and their mean ± sample std over folds.

    Args:
        per_fold: the model's metrics per fold (each with ``fold``).
        reference_per_fold: the reference's, on the same folds.
        keys: metrics to subtract.

    Returns:
        ``(rows, summary)``: one ``{"fold", <key>...}`` per fold and ``{"<key>_mean", "<key>_std", "n_folds",
        "<key>_folds_ahead"}`` (folds where the difference is above 0).

    Raises:
        DataError: the folds differ.
    """
    reference = {int(r["fold"]): r for r in reference_per_fold}
    folds = [int(r["fold"]) for r in per_fold]
    if sorted(folds) != sorted(reference):
        raise DataError(f"folds {sorted(folds)} and reference folds {sorted(reference)} differ")
    rows = [
        {"fold": int(r["fold"]), **{k: float(r[k]) - float(reference[int(r["fold"])][k]) for k in keys}}
        for r in per_fold
    ]
    summary: dict[str, Any] = summarise_folds(rows, keys=keys)
    for key in keys:
        summary[f"{key}_folds_ahead"] = sum(1 for r in rows if r[key] > 0)
    return rows, summary
