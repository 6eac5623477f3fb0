"""MONAI Label infer task: benign/malignant scores of clicked or outlined nodules from a naslung bundle."""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import torch
from monai.transforms import Compose
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.bundle import BundleInferTask

from lib.bundle_copies import is_ensemble
from lib.nodule_centres import NoduleCentre, centres_from_label, centres_from_points, read_geometry

__all__ = ["NoduleCentresd", "NoduleCubesd", "NoduleScoresd", "NoduleClassifierInfer"]

logger = logging.getLogger(__name__)

#: Request keys: MONAI Label's clicked points, and the path of an uploaded label image (the ``label`` form file).
FOREGROUND_KEY, LABEL_KEY = "foreground", "label"


class NoduleCentresd:
    """Request -> ``nodules``: the centres of the clicked points (``foreground``) and of the label's components.

    Reads the image's grid (header only) to turn voxel indices ``(i, j, k)`` into world mm (LPS).

    Raises:
        MONAILabelException: no point and no label component, a point outside the image, or an unreadable file.
    """

    def __init__(self, image_key: str = "image", nodules_key: str = "nodules") -> None:
        self.image_key, self.nodules_key = image_key, nodules_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        try:
            geometry = read_geometry(str(d[self.image_key]))
            centres = centres_from_points(d.get(FOREGROUND_KEY), geometry)
            label = d.get(LABEL_KEY)
            if isinstance(label, str) and label:
                centres += centres_from_label(label)
        except ValueError as err:
            raise MONAILabelException(MONAILabelError.INVALID_INPUT, str(err)) from err
        if not centres:
            raise MONAILabelException(
                MONAILabelError.INVALID_INPUT,
                "no nodule given: pass clicked points as params {'foreground': [[i, j, k], ...]} (voxel indices of "
                "the image) or upload a label image whose connected components outline the nodules",
            )
        d[self.nodules_key] = centres
        return d


class NoduleCubesd:
    """``nodules`` -> ``image``: the (N, 1, 32, 32, 32) cubes the bundle's own ``NoduleInputd`` cuts at each centre.

    A nodule the bundle cannot cut (say, its centre leaves the scan) gets a blank cube and its reason in
    ``nodule_errors``; the others still run.

    Args:
        nodule_input: the bundle's ``NoduleInputd`` (first transform of its inference preprocessing).
    """

    def __init__(self, nodule_input: Callable, image_key: str = "image", nodules_key: str = "nodules") -> None:
        self.nodule_input, self.image_key, self.nodules_key = nodule_input, image_key, nodules_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        cubes, errors = [], []
        for centre in d[self.nodules_key]:
            item = self.nodule_input({"image": d["image_path"], "center_mm": centre.center_mm})
            cubes.append(torch.as_tensor(item["image"], dtype=torch.float32))
            errors.append(str(item.get("error", "")))
        d[self.image_key] = torch.stack(cubes)
        d["nodule_errors"] = errors
        return d


class NoduleScoresd:
    """(N, C) network outputs -> one result per nodule, through the bundle's per-item postprocessing.

    The classifier's postprocessing is a softmax over (2,) logits; the ensemble's is ``MajorityVoted`` over the
    (n_members,) member probabilities, adding ``votes``, ``n_members``, ``vote_fraction`` and ``prediction``.

    Args:
        postprocessing: the bundle's postprocessing transforms (one nodule's ``{"pred": (C,)}`` each).
        label_names: class index -> name (``{0: "benign", 1: "malignant"}``).
        threshold: the bundle's decision threshold on the probability of malignancy (used when the postprocessing
            gives no ``prediction``; the ensemble's vote applies it per member).
    """

    def __init__(
        self, postprocessing: Sequence[Callable], label_names: Mapping[int, str], threshold: float, pred_key="pred"
    ) -> None:
        self.postprocessing = Compose(list(postprocessing))
        self.label_names, self.threshold, self.pred_key = dict(label_names), float(threshold), pred_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        outputs = torch.as_tensor(d[self.pred_key]).detach().cpu().float()
        results = []
        centres: list[NoduleCentre] = d["nodules"]
        for row, centre, error in zip(outputs, centres, d["nodule_errors"], strict=True):
            result: dict[str, Any] = {
                "nodule_id": centre.nodule_id,
                "source": centre.source,
                "center_voxel": [round(v, 3) for v in centre.center_voxel],
                "center_mm": [round(v, 4) for v in centre.center_mm],
                **centre.extra,
            }
            if error:
                result.update(probability=None, prediction=None, label=None, scores=None, error=error)
                results.append(result)
                continue
            item = self.postprocessing({self.pred_key: row})
            scores = torch.as_tensor(item[self.pred_key]).float().reshape(-1)
            probability = float(scores[1])
            prediction = int(item.get("prediction", int(probability > self.threshold)))
            result.update(
                probability=probability,
                prediction=prediction,
                label=self.label_names[prediction],
                scores={self.label_names[i]: float(s) for i, s in enumerate(scores)},
            )
            if "votes" in item:
                result.update(
                    votes=int(item["votes"]),
                    n_members=int(item["n_members"]),
                    vote_fraction=float(item["vote_fraction"]),
                    member_probabilities=[float(p) for p in torch.as_tensor(item["member_probabilities"])],
                )
            result["error"] = ""
            results.append(result)
        d["nodule_results"] = results
        return d


class NoduleClassifierInfer(BundleInferTask):
    """Classify the nodules at clicked points or in a label ROI with an exported naslung bundle (classifier or
    majority-vote ensemble, NAS-Lung paper Sec. 3.5).

    Departs from :class:`BundleInferTask` where its segmentation defaults break classification: the type is given
    (not guessed from the folder name), MONAI Label's ``Restored`` post-transform (which resizes ``pred`` to the
    image) is off, the bundle's preprocessing runs once per nodule at a centre the request gives, the network sees
    all cubes as one batch (no extra batch axis), the bundle's postprocessing runs per nodule and the writer returns
    one JSON entry per nodule instead of ``ClassificationWriter``'s single prediction.

    Args:
        path: the bundle (a working copy, see :func:`lib.bundle_copies.working_copy`).
        conf: the app's ``--conf`` values.
    """

    def __init__(self, path: str, conf: dict[str, str], **kwargs: Any) -> None:
        self.ensemble = is_ensemble(path)
        kind = "majority-vote ensemble" if self.ensemble else "classifier"
        super().__init__(
            path,
            conf,
            type=InferType.CLASSIFICATION,
            add_post_restore=False,
            load_strict=True,
            **kwargs,
        )
        self.threshold = float(self.bundle_config.get_parsed_content("threshold")) if self.valid else 0.5
        if self.valid:
            self.description = f"naslung nodule malignancy {kind}: {getattr(self, 'description', '')}"
            # the member files of an ensemble do not fit its network: serve models/model.pt (or model.ts) only
            self._config.pop("model_filename", None)

    def pre_transforms(self, data=None) -> Sequence[Callable]:
        nodule_input = super().pre_transforms(data)[0]
        return [NoduleCentresd(), NoduleCubesd(nodule_input)]

    def run_inferer(self, data: dict[str, Any], convert_to_batch: bool = True, device: str = "cuda") -> dict[str, Any]:
        return super().run_inferer(data, convert_to_batch=False, device=device)

    def post_transforms(self, data=None) -> Sequence[Callable]:
        names = {index: name for name, index in self.labels.items()}
        return [NoduleScoresd(super().post_transforms(data), names, self.threshold, pred_key=self.output_label_key)]

    def writer(self, data: dict[str, Any], extension=None, dtype=None) -> tuple[Any, dict[str, Any]]:
        return None, {
            "model": data.get("model"),
            "kind": "ensemble" if self.ensemble else "classifier",
            "threshold": self.threshold,
            "coordinates": "center_voxel: (i, j, k) indices of the image; center_mm: world mm, LPS",
            "nodules": data["nodule_results"],
        }
