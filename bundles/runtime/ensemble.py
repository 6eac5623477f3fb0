"""The majority-vote ensemble of a bundle: a scriptable module of members, its inferer and the vote transform."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from monai.config import KeysCollection
from monai.inferers import Inferer
from monai.transforms import MapTransform

from naslung.bundles.runtime.decisions import DEFAULT_THRESHOLD, majority_vote
from naslung.networks.errors import ConfigError

__all__ = ["EnsembleClassifier", "MemberProbabilityInferer", "MajorityVoted"]


class EnsembleClassifier(nn.Module):
    """Several 2-class nodule classifiers side by side (NAS-Lung's ensemble, paper Sec. 3.5).

    ``forward`` returns the members' mean softmax probabilities, (B, 2), so the module fits MONAI's
    ``verify_net_in_out`` and TorchScript export; :meth:`member_probabilities` returns each member's probability of
    malignancy, (B, n), from which :class:`MajorityVoted` takes the paper's majority vote. Members are indexed
    ``members.<i>`` in the ``state_dict``. Eval mode only (an angular head returns logits only in eval mode).

    Args:
        members: the member networks, each mapping (B, 1, 32, 32, 32) cubes to (B, 2) logits in eval mode.

    Raises:
        ConfigError: when ``members`` is empty.
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(members) == 0:
            raise ConfigError("EnsembleClassifier needs at least one member network")
        self.members = nn.ModuleList(members)

    @torch.jit.export
    def member_probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """Probability of malignancy from each member: ``x`` (B, 1, D, H, W) -> (B, n_members)."""
        probabilities: list[torch.Tensor] = []
        for member in self.members:
            probabilities.append(torch.softmax(member(x), dim=1)[:, 1])
        return torch.stack(probabilities, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Mean class probabilities over the members: ``x`` (B, 1, D, H, W) -> (B, 2)."""
        probabilities: list[torch.Tensor] = []
        for member in self.members:
            probabilities.append(torch.softmax(member(x), dim=1))
        return torch.stack(probabilities, dim=0).mean(dim=0)


class MemberProbabilityInferer(Inferer):
    """Inferer returning ``network.member_probabilities(inputs)``, (B, n_members), for :class:`MajorityVoted`."""

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        return network.member_probabilities(inputs)


class MajorityVoted(MapTransform):
    """Post-processing of one item: member probabilities (n,) -> majority vote, votes and mean probability.

    Uses :func:`naslung.bundles.runtime.decisions.majority_vote`: a member votes malignant when its probability exceeds
    ``threshold``; the nodule is malignant when more than half of the members vote so (a tie is benign).
    ``pred`` becomes the two class probabilities ``[1 - mean, mean]`` of the members' mean probability; the
    members' probabilities move to ``member_probabilities`` and ``votes``, ``n_members``, ``vote_fraction`` and
    ``prediction`` are added.

    Args:
        keys: key of the (n,) member probabilities (``"pred"``).
        threshold: each member's decision threshold.
        allow_missing_keys: MONAI's option.
    """

    def __init__(
        self, keys: KeysCollection = "pred", threshold: float = DEFAULT_THRESHOLD, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.threshold = float(threshold)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            members = torch.as_tensor(d[key]).detach().float().reshape(-1)
            vote = majority_vote(members.cpu().numpy().astype(np.float64)[:, None], self.threshold)
            mean = float(vote["mean_probability"][0])
            d["member_probabilities"] = members
            d[key] = torch.tensor([1.0 - mean, mean], dtype=torch.float32)
            d["votes"] = int(vote["votes"][0])
            d["n_members"] = int(members.numel())
            d["vote_fraction"] = float(vote["vote_fraction"][0])
            d["prediction"] = int(vote["prediction"][0])
        return d
