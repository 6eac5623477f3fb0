"""naslung.networks: architecture specs, CBAM-3D residual networks, losses, the factory and cost profiling."""

from __future__ import annotations

from .blocks import CBAM_ORDERS, CBAMBlock, ChannelAttention, ResidualBlock, SpatialAttention
from .cbam_resnet import ATTENTION_OPTIONS, HEADS, STAGE_NAMES, CBAMResNet3D
from .export import INFERENCE_BACKENDS, OnnxRuntimeModel, inference_runner, load_torchscript, to_onnx, to_torchscript
from .factory import NETWORKS, build_network
from .losses import (
    LOSSES,
    MARGINS,
    AngularLinear,
    AngularSoftmaxLoss,
    LambdaSchedule,
    SoftmaxCrossEntropyLoss,
    angular_margin_psi,
    build_loss,
    logits_from_output,
)
from .profile import CostProfile, count_macs, count_parameters, fixed_threads, measure_latency_ms, profile
from .spec import PAPER_MODEL_1, ArchSpec

__all__ = [
    "ArchSpec",
    "PAPER_MODEL_1",
    "CBAMResNet3D",
    "ATTENTION_OPTIONS",
    "HEADS",
    "STAGE_NAMES",
    "CBAM_ORDERS",
    "CBAMBlock",
    "ChannelAttention",
    "SpatialAttention",
    "ResidualBlock",
    "AngularLinear",
    "AngularSoftmaxLoss",
    "SoftmaxCrossEntropyLoss",
    "LambdaSchedule",
    "angular_margin_psi",
    "logits_from_output",
    "build_loss",
    "LOSSES",
    "MARGINS",
    "NETWORKS",
    "build_network",
    "CostProfile",
    "profile",
    "count_parameters",
    "count_macs",
    "measure_latency_ms",
    "fixed_threads",
    "to_torchscript",
    "load_torchscript",
    "to_onnx",
    "OnnxRuntimeModel",
    "inference_runner",
    "INFERENCE_BACKENDS",
]
