"""naslung.networks: architecture specs, CBAM-3D residual networks, losses, the factory and cost profiling."""

from __future__ import annotations

from .blocks import CBAM_ORDERS, CBAMBlock, ChannelAttention, ResidualBlock, SpatialAttention
from .cbam_resnet import ATTENTION_OPTIONS, STAGE_NAMES, CBAMResNet3D
from .export import INFERENCE_BACKENDS, OnnxRuntimeModel, inference_runner, load_torchscript, to_onnx, to_torchscript
from .factory import BASELINES, LAYOUTS, NETWORKS, build_network, registered_name
from .gumbel import TemperatureSchedule, gumbel_softmax_st
from .initialisation import init_resnet_weights_
from .losses import (
    HEADS,
    LOSSES,
    MARGINS,
    AngularLinear,
    AngularSoftmaxLoss,
    LambdaSchedule,
    SoftmaxCrossEntropyLoss,
    angular_margin_psi,
    build_loss,
    classification_head,
    logits_from_output,
)
from .mc3 import MC3, MixedConvBlock, mc3_18
from .profile import CostProfile, count_macs, count_parameters, fixed_threads, measure_latency_ms, profile
from .reference_convres import REFERENCE_ATTENTION_OPTIONS, ReferenceConvRes3D
from .reference_weights import authors_key_map, convert_authors_state_dict
from .spec import DEFAULT_KERNEL, PAPER_MODEL_1, ArchSpec
from .supernet import CBAMSupernet3D, measure_latency_table

__all__ = [
    "ArchSpec",
    "PAPER_MODEL_1",
    "DEFAULT_KERNEL",
    "CBAMSupernet3D",
    "measure_latency_table",
    "gumbel_softmax_st",
    "TemperatureSchedule",
    "CBAMResNet3D",
    "ReferenceConvRes3D",
    "REFERENCE_ATTENTION_OPTIONS",
    "authors_key_map",
    "convert_authors_state_dict",
    "LAYOUTS",
    "ATTENTION_OPTIONS",
    "HEADS",
    "classification_head",
    "init_resnet_weights_",
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
    "BASELINES",
    "build_network",
    "registered_name",
    "MC3",
    "MixedConvBlock",
    "mc3_18",
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
