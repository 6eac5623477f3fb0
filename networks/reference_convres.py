"""NAS-Lung's networks in the authors' layout (``ConvRes``), and the conversion of the authors' weights to it."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Pool
from monai.utils import look_up_option

from naslung.networks.blocks.reference_cbam import ReferenceCBAMBlock
from naslung.networks.blocks.reference_residual import ReferenceResidualBlock
from naslung.networks.errors import ConfigError
from naslung.networks.heads import HEADS, classification_head
from naslung.networks.spec import PAPER_MODEL_1, ArchSpec

__all__ = [
    "REFERENCE_ATTENTION_OPTIONS",
    "ReferenceConvRes3D",
    "authors_key_map",
    "convert_authors_state_dict",
]

REFERENCE_ATTENTION_OPTIONS = ("channel_first", "none")
"""``attention`` values of the reference layout: the authors' CBAM (:class:`ReferenceCBAMBlock`, channel gate
first) or none. The authors' layer has no spatial-first order: its output ``M_S * x + x`` is defined by the order."""

_STAGES = ("stage3", "stage4", "stage5")


class ReferenceConvRes3D(nn.Module):
    """NAS-Lung's general network exactly as the authors' code builds it (``ConvRes`` of fei-hdu/NAS-Lung).

    For ``arch = [C1, C2, [C^3_1..C^3_L], [C^4_1..C^4_M], [C^5_1..C^5_N]]`` and a 32^3 nodule cube:

    ========  ==================================================================  ================
    stage     layers                                                              output
    ========  ==================================================================  ================
    stage1    3^3 conv (bias) + BN + ReLU                                         (B, C1, 32^3)
    stage2    3^3 conv (bias) + BN + ReLU, CBAM                                   (B, C2, 32^3)
    stage3    ``downsample``: stride-2 3^3 conv (no bias) + BN + ReLU keeping     (B, C^3_L, 16^3)
              the channels; L :class:`ReferenceResidualBlock`; CBAM
    stage4    the same with M blocks                                              (B, C^4_M, 8^3)
    stage5    the same with N blocks                                              (B, C^5_N, 4^3)
    pool      global average (the authors' ``AvgPool3d(4)`` on 4^3), ``features``  (B, C^5_N)
    head      A-Softmax's angular layer (the authors' ``AngleLinear``)            (B, K)
    ========  ==================================================================  ================

    CBAM is :class:`ReferenceCBAMBlock` (softmax channel gate, ``M_S * x + x``). Table 5's Model-1
    ``[4,4,[4,4],[4,8],[8,8]]`` has 16,128 parameters in this layout with the angular head (13,314 in
    :class:`~naslung.networks.CBAMResNet3D`'s). The authors' code fixes C1 = C2 = 4, one input channel, two classes
    and margin 4; here they follow the spec and the arguments, and with those values the layout, the parameter
    shapes and the eval-mode logits are the authors' (:func:`convert_authors_state_dict` maps their weights).
    Weights start at PyTorch's default initialisation, as in the authors' code.

    The angular head's weight is stored (K, F) here and (F, K) in the authors' ``AngleLinear``; both normalise each
    class vector, so eval logits are ``||x|| cos(theta_j)`` in both. ``head="linear"`` (softmax training) is offered
    for ablations; the authors' weights need ``head="angular"``.

    Args:
        spatial_dims: number of spatial dimensions (3 for CT cubes; 2 works too).
        in_channels: input channels (1 for a CT cube).
        num_classes: K, the number of classes (2: benign, malignant).
        arch: the spec, as :class:`ArchSpec`, its text or nested lists. A block written ``[c, k]`` uses k^3 main
            convolutions (the authors' code has 3 only).
        attention: ``"channel_first"`` (the authors' CBAM, default) or ``"none"`` (``None`` too).
        head: ``"angular"`` (default, the authors') or ``"linear"``.
        margin: A-Softmax margin m in {1, 2, 3, 4} (the authors' 4).
        act: activation, a name or ``(name, kwargs)``.
        norm: normalisation, a name or ``(name, kwargs)``.
        cbam_reduction: reduction of CBAM's channel MLP (the authors' 4).
        spatial_kernel_size: kernel of CBAM's spatial convolution (the authors' 3).
        record_attention: keep each stage's last spatial attention map, see :meth:`attention_maps`.

    Shapes:
        input: (B, in_channels, *spatial), spatial sizes divisible by 8 (e.g. 32^3);
        output: (B, num_classes) logits in eval mode; (B, 2, K) in training mode with the angular head.

    Raises:
        ConfigError: for an invalid spec or option.
    """

    layout = "reference"

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        num_classes: int = 2,
        arch: ArchSpec | str | Sequence[Any] = PAPER_MODEL_1,
        attention: str | None = "channel_first",
        head: str = "angular",
        margin: int = 4,
        act: str | tuple = "relu",
        norm: str | tuple = "batch",
        cbam_reduction: int = 4,
        spatial_kernel_size: int = 3,
        record_attention: bool = True,
    ) -> None:
        super().__init__()
        if spatial_dims not in (1, 2, 3):
            raise ConfigError(f"ReferenceConvRes3D: spatial_dims must be 1, 2 or 3, got {spatial_dims!r}.")
        if in_channels < 1 or num_classes < 1:
            raise ConfigError(
                f"ReferenceConvRes3D: in_channels and num_classes must be positive, got {in_channels}, {num_classes}."
            )
        self.arch = ArchSpec.coerce(arch)
        self.attention = _option(attention, REFERENCE_ATTENTION_OPTIONS, "attention")
        self.head_type = _option(head, HEADS, "head")
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.num_classes = num_classes

        def cbam(channels: int) -> OrderedDict[str, nn.Module]:
            if self.attention == "none":
                return OrderedDict()
            block = ReferenceCBAMBlock(
                spatial_dims, channels, reduction=cbam_reduction, spatial_kernel_size=spatial_kernel_size,
                record_spatial_map=record_attention,
            )  # fmt: skip
            return OrderedDict(cbam=block)

        def unit(c_in: int, c_out: int, stride: int = 1, bias: bool = True) -> Convolution:
            return Convolution(spatial_dims, c_in, c_out, strides=stride, kernel_size=3, act=act, norm=norm, bias=bias)

        spec = self.arch
        self.stage1 = unit(in_channels, spec.stage1)
        self.stage2 = nn.Sequential(OrderedDict(conv2=unit(spec.stage1, spec.stage2), **cbam(spec.stage2)))
        channels = spec.stage2
        for name, blocks, kernels in zip(_STAGES, spec.stages, spec.kernel_sizes, strict=True):
            layers: OrderedDict[str, nn.Module] = OrderedDict(downsample=unit(channels, channels, 2, bias=False))
            for index, (out_channels, kernel) in enumerate(zip(blocks, kernels, strict=True)):
                layers[f"block{index + 1}"] = ReferenceResidualBlock(
                    spatial_dims, channels, out_channels, kernel_size=kernel, act=act, norm=norm
                )
                channels = out_channels
            layers.update(cbam(channels))
            setattr(self, name, nn.Sequential(layers))
        self.pool = Pool[Pool.ADAPTIVEAVG, spatial_dims](1)
        self.head = classification_head(self.head_type, channels, num_classes, margin)
        self.feature_channels = channels

    @torch.jit.export
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features: the globally pooled output of stage 5, the input of the head.

        Args:
            x: (B, in_channels, *spatial) nodule cubes.

        Returns:
            (B, C^5_N) feature vectors.
        """
        x = self.stage5(self.stage4(self.stage3(self.stage2(self.stage1(x)))))
        return torch.flatten(self.pool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Classify ``x`` (B, in_channels, *spatial): (B, num_classes) logits in eval mode."""
        return self.head(self.features(x))

    def attention_maps(self) -> dict[str, torch.Tensor]:
        """The spatial attention map of each stage's CBAM from the last forward pass.

        Returns:
            ``{"stage2": (B, 1, 32, 32, 32), "stage3": (B, 1, 16, 16, 16), ...}`` for a 32^3 input, detached,
            values in (0, 1); empty without attention, before any forward pass, or with ``record_attention=False``.
        """
        maps: dict[str, torch.Tensor] = {}
        for name in ("stage2", *_STAGES):
            block = getattr(getattr(self, name), "cbam", None)
            if isinstance(block, ReferenceCBAMBlock) and block.spatial_map is not None:
                maps[name] = block.spatial_map
        return maps


def _option(value: Any, supported: Sequence[str], what: str) -> str:
    """Validate a string option of :class:`ReferenceConvRes3D` with MONAI's ``look_up_option``."""
    try:
        return look_up_option("none" if value is None else value, supported)
    except ValueError:
        raise ConfigError(
            f"ReferenceConvRes3D: {what} {value!r} is not supported in the reference layout; use one of "
            f"{tuple(supported)}."
        ) from None


_CONV_UNIT = {"0.weight": "conv.weight", "0.bias": "conv.bias"}
_NORM_ENTRIES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
_CBAM_ENTRIES = {
    "ch_Linear1.weight": "channel_mlp.0.weight",
    "ch_Linear2.weight": "channel_mlp.1.weight",
    "sp_Conv.weight": "spatial_conv.weight",
}


def _unit_keys(authors: str, ours: str, bias: bool = True) -> dict[str, str]:
    """Keys of one authors' ``Sequential(conv, BN, ReLU)`` mapped to a MONAI ``Convolution`` (``conv``, ``adn.N``)."""
    keys = {f"{authors}.{a}": f"{ours}.{o}" for a, o in _CONV_UNIT.items() if bias or a != "0.bias"}
    keys.update({f"{authors}.1.{entry}": f"{ours}.adn.N.{entry}" for entry in _NORM_ENTRIES})
    return keys


def _cbam_keys(authors: str, ours: str) -> dict[str, str]:
    return {f"{authors}.{a}": f"{ours}.{o}" for a, o in _CBAM_ENTRIES.items()}


def authors_key_map(arch: ArchSpec | str | Sequence[Any] = PAPER_MODEL_1) -> dict[str, str]:
    """Every ``state_dict`` key of the authors' ``ConvRes`` for ``arch`` -> its key in :class:`ReferenceConvRes3D`.

    The authors' names: ``conv1``, ``conv2`` (``Sequential(conv, BN, ReLU)``, entries ``.0``/``.1``),
    ``first_cbam`` (``ch_Linear1``, ``ch_Linear2``, ``sp_Conv``), one flat ``layers`` list holding, per stage 3-5,
    the stride-2 unit, the residual blocks (``my_conv1``, ``my_conv2``, ``conv3``) and the CBAM layer, and ``fc``.
    Ours (with ``attention="channel_first"``, ``head="angular"``): ``stage1``, ``stage2.conv2``, ``stage2.cbam``,
    ``stageN.downsample``, ``stageN.block<i>.conv1/conv2/shortcut``, ``stageN.cbam``, ``head``.

    Args:
        arch: the spec the checkpoint was trained with (the authors' ``config`` is its stages 3-5).

    Returns:
        An ordered mapping, in the authors' ``state_dict`` order.
    """
    spec = ArchSpec.coerce(arch)
    keys = {**_unit_keys("conv1", "stage1"), **_unit_keys("conv2", "stage2.conv2")}
    keys.update(_cbam_keys("first_cbam", "stage2.cbam"))
    index = 0
    for stage, blocks in zip(_STAGES, spec.stages, strict=True):
        keys.update(_unit_keys(f"layers.{index}", f"{stage}.downsample", bias=False))
        index += 1
        for block in range(1, len(blocks) + 1):
            for authors, ours in (("my_conv1", "conv1"), ("my_conv2", "conv2"), ("conv3", "shortcut")):
                keys.update(_unit_keys(f"layers.{index}.{authors}", f"{stage}.block{block}.{ours}"))
            index += 1
        keys.update(_cbam_keys(f"layers.{index}", f"{stage}.cbam"))
        index += 1
    keys["fc.weight"] = "head.weight"
    return keys


def convert_authors_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    arch: ArchSpec | str | Sequence[Any] = PAPER_MODEL_1,
    in_channels: int | None = None,
    num_classes: int | None = None,
    margin: int = 4,
) -> tuple[dict[str, torch.Tensor], ReferenceConvRes3D]:
    """Convert a ``state_dict`` of the authors' ``ConvRes`` into one of :class:`ReferenceConvRes3D`.

    Every key of :func:`authors_key_map` must be present with the shape the network of ``arch`` gives it, and no
    other key may be. Only ``num_batches_tracked`` of a batch norm may be missing (checkpoints of PyTorch < 0.4.1
    lack it; it does not enter an eval forward pass): it is set to 0. A ``module.`` prefix on every key
    (``nn.DataParallel``) is removed. ``fc.weight`` (F, K) is transposed to the angular head's (K, F).

    Args:
        state_dict: the authors' weights (names such as ``conv1.0.weight``, ``layers.3.ch_Linear1.weight``,
            ``fc.weight``).
        arch: the spec the weights were trained with.
        in_channels: input channels; ``None`` reads them from ``conv1.0.weight`` (the authors' 1).
        num_classes: classes K; ``None`` reads them from ``fc.weight`` (the authors' 2).
        margin: A-Softmax margin of the head (the authors' 4; it does not change eval logits).

    Returns:
        ``(converted, network)``: the converted ``state_dict`` (our keys, a new dict of the same tensors, cloned
        where transposed) and the network, built with ``head="angular"`` and the converted weights loaded,
        in eval mode.

    Raises:
        ConfigError: naming the key, for an unknown key, a missing key or a key whose shape does not fit ``arch``.
    """
    spec = ArchSpec.coerce(arch)
    weights = dict(state_dict)
    if weights and all(key.startswith("module.") for key in weights):
        weights = {key[len("module.") :]: value for key, value in weights.items()}
    for key, value in weights.items():
        if not isinstance(value, torch.Tensor):
            raise ConfigError(f"authors' weights: {key!r} is a {type(value).__name__}, not a tensor.")
    if in_channels is None:
        in_channels = int(weights["conv1.0.weight"].shape[1]) if "conv1.0.weight" in weights else 1
    if num_classes is None:
        fc_weight = weights.get("fc.weight")
        num_classes = int(fc_weight.shape[1]) if fc_weight is not None and fc_weight.ndim == 2 else 2
    network = ReferenceConvRes3D(
        spatial_dims=3, in_channels=in_channels, num_classes=num_classes, arch=spec, head="angular", margin=margin
    )
    expected = network.state_dict()
    mapping = authors_key_map(spec)
    unknown = sorted(set(weights) - set(mapping))
    if unknown:
        raise ConfigError(
            f"authors' weights: unknown key {unknown[0]!r}"
            + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else "")
            + f"; it is not in ConvRes for spec {spec}: check --arch (the authors' config is the spec's stages 3-5)."
        )
    converted: dict[str, torch.Tensor] = {}
    for authors, ours in mapping.items():
        target = expected[ours]
        if authors not in weights:
            if authors.endswith("num_batches_tracked"):
                converted[ours] = torch.zeros_like(target)
                continue
            raise ConfigError(
                f"authors' weights: missing key {authors!r} (our {ours!r}) for spec {spec}; check --arch "
                "and that the file holds the whole ConvRes state_dict."
            )
        value = weights[authors]
        if authors == "fc.weight":
            value = value.t().contiguous() if value.ndim == 2 else value
        if tuple(value.shape) != tuple(target.shape):
            shape = tuple(weights[authors].shape)
            wanted = tuple(reversed(target.shape)) if authors == "fc.weight" else tuple(target.shape)
            raise ConfigError(
                f"authors' weights: key {authors!r} has shape {shape}, spec {spec} needs {wanted}; check "
                "--arch (channels of each block) and the checkpoint."
            )
        converted[ours] = value.to(dtype=target.dtype)
    network.load_state_dict(converted, strict=True)
    return converted, network.eval()
