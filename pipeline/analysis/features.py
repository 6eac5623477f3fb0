"""What the evaluate step reads from a trained network: the held-out cubes, penultimate-layer features and Grad-CAM
maps of its last stage."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from naslung.pipeline.errors import ConfigError, DataError
from naslung.transforms import eval_transforms

__all__ = ["load_cubes", "penultimate_features", "default_gradcam_layer", "gradcam_maps"]

_POOLING = (
    torch.nn.modules.pooling._AdaptiveAvgPoolNd,
    torch.nn.modules.pooling._AdaptiveMaxPoolNd,
    torch.nn.modules.pooling._AvgPoolNd,
    torch.nn.modules.pooling._MaxPoolNd,
)


def load_cubes(datalist: Sequence[Mapping[str, Any]]) -> tuple[torch.Tensor, np.ndarray, list[str]]:
    """Cubes of a datalist through the evaluation transforms.

    Returns:
        ``(images, labels, nodule_ids)``: ``(N, 1, 32, 32, 32)`` float tensor, ``(N,)`` int labels, ids.

    Raises:
        DataError: for an empty datalist.
    """
    if not datalist:
        raise DataError("no cubes to load: the datalist is empty")
    transform = eval_transforms()
    items = [transform(dict(d)) for d in datalist]
    images = torch.stack([torch.as_tensor(item["image"]) for item in items]).float()
    labels = np.array([int(d["label"]) for d in datalist], dtype=np.int64)
    ids = [str(d.get("nodule_id", i)) for i, d in enumerate(datalist)]
    return images, labels, ids


@torch.no_grad()
def penultimate_features(
    network: torch.nn.Module, images: torch.Tensor, device: str | torch.device = "cpu", batch_size: int = 32
) -> np.ndarray:
    """Penultimate-layer features (the head's input) of ``images`` (B, 1, D, H, W) -> ``(B, C)``.

    Uses the network's ``features(x)`` (:class:`naslung.networks.CBAMResNet3D`), in eval mode.

    Raises:
        ConfigError: when the network has no ``features`` method (MONAI's baselines).
    """
    if not callable(getattr(network, "features", None)):
        raise ConfigError(
            f"{type(network).__name__} has no features(x) method; feature discriminability needs a NAS-Lung network"
        )
    network.eval()
    chunks = [network.features(images[i : i + batch_size].to(device)).cpu() for i in range(0, len(images), batch_size)]
    return torch.cat(chunks).double().numpy()


def default_gradcam_layer(network: torch.nn.Module, input_shape: Sequence[int] = (1, 32, 32, 32)) -> str:
    """The layer Grad-CAM should look at: the last module (in the order modules finish their forward pass)
    whose output still has the input's spatial axes, pooling layers excluded.

    That is the output of the last convolutional stage, the input of the global pooling: ``"stage5"`` of
    :class:`naslung.networks.CBAMResNet3D` (after its CBAM, 4^3 for a 32^3 cube; the head is a linear or
    angular layer on the pooled features, and in eval mode it returns ``(B, 2)`` logits, the score MONAI's
    Grad-CAM differentiates), ``"class_layers.relu"`` of MONAI's DenseNet121 (as MONAI's documentation uses)
    and ``"layer4"`` of MONAI's ResNets. A container finishes after its children, so the outermost folder of
    the last stage is returned.

    Args:
        network: any network of :func:`naslung.networks.build_network` (or another classifier).
        input_shape: shape of one input without the batch axis, ``(C, *spatial)``.

    Raises:
        ConfigError: when no module keeps the spatial axes.
    """
    finished: list[tuple[str, torch.nn.Module, Any]] = []
    handles = [
        module.register_forward_hook(lambda mod, _inp, out, name=name: finished.append((name, mod, out)))
        for name, module in network.named_modules()
        if name
    ]
    was_training = network.training
    device = next((p.device for p in network.parameters()), torch.device("cpu"))
    try:
        network.eval()
        with torch.no_grad():
            network(torch.zeros((1, *input_shape), device=device))
    finally:
        for handle in handles:
            handle.remove()
        network.train(was_training)
    ndim = len(input_shape) + 1
    for name, module, output in reversed(finished):
        if isinstance(output, torch.Tensor) and output.ndim == ndim and not isinstance(module, _POOLING):
            return name
    raise ConfigError(f"{type(network).__name__}: no layer keeps the spatial axes; name the Grad-CAM layer")


def gradcam_maps(
    network: torch.nn.Module,
    images: torch.Tensor,
    target_layer: str | None = None,
    class_idx: int | None = None,
) -> np.ndarray:
    """Grad-CAM maps (Selvaraju et al. 2017) with ``monai.visualize.GradCAM``, upsampled to the input size.

    Works for every network of the factory (NAS-Lung candidates and MONAI's 3D baselines). The network is
    deep-copied first, because MONAI's hooks stay registered on the module and it switches off the target
    layer's ``inplace`` flag. Each nodule is processed alone (MONAI scores a batch by summing the logits of
    every sample's arg-max class over all samples, which mixes nodules). MONAI's default post-processing maps
    (min, max) to (1, 0), reversing magnitudes; here the ReLU'd, trilinearly upsampled map is returned as is
    (0 = no evidence; larger = more), so callers scale it for display.

    Args:
        network: a classifier returning ``(B, K)`` logits in eval mode.
        images: ``(B, C, *spatial)`` inputs, e.g. ``(B, 1, 32, 32, 32)`` cubes.
        target_layer: module name (``dict(network.named_modules())`` key); default :func:`default_gradcam_layer`.
        class_idx: the class whose logit is explained (1 = malignant); ``None``: each nodule's predicted class.

    Returns:
        ``(B, *spatial)`` float32 maps, non-negative.
    """
    from monai.visualize import GradCAM

    model = copy.deepcopy(network).eval()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    layer = target_layer or default_gradcam_layer(model, tuple(images.shape[1:]))
    names = dict(model.named_modules())
    if layer not in names:
        raise ConfigError(f"Grad-CAM layer {layer!r} is not a module of {type(network).__name__}")
    cam = GradCAM(nn_module=model, target_layers=layer, postprocessing=lambda x: x)
    maps = []
    with torch.enable_grad():
        for image in images:
            result = cam(x=image[None].to(device).float(), class_idx=class_idx)
            maps.append(torch.as_tensor(result)[0, 0].detach().float().cpu().numpy())
    return np.stack(maps).astype(np.float32)
