"""A MONAI inferer that runs the network under ``torch.autocast`` (bfloat16 on CPUs that compute it natively)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from monai.inferers import Inferer

from naslung.pipeline.errors import ConfigError

__all__ = ["AUTOCAST_DTYPES", "cpu_bf16_supported", "AutocastInferer"]

logger = logging.getLogger(__name__)

AUTOCAST_DTYPES: dict[str, torch.dtype] = {"bfloat16": torch.bfloat16, "float16": torch.float16}
"""``dtype`` names :class:`AutocastInferer` accepts."""


def cpu_bf16_supported() -> bool:
    """Whether this CPU runs oneDNN's bfloat16 kernels natively (AVX512-BF16 or AMX): only then is bf16 faster."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without the op
        return False


class AutocastInferer(Inferer):
    """Run ``network(inputs)`` under ``torch.autocast(device_type, dtype)`` and return float32 outputs.

    MONAI's ``SupervisedTrainer(amp=True)`` autocasts on CUDA only (float16 with a ``GradScaler``). On a CPU with
    native bfloat16 (AVX512-BF16/AMX), autocasting the forward pass to bfloat16 halves the memory traffic of the
    small-channel 3D convolutions, batch norms and attention products that bound NAS-Lung's training step:
    ``benchmarks/train_step.py`` measures Model-1's samples/s with and without it, side by side. Weights, their
    gradients and the optimiser stay float32 (bfloat16 keeps float32's exponent range, so no loss scaling is
    needed); the outputs are cast back to float32 so the loss and metrics run in float32.

    Args:
        device_type: ``"cpu"`` or ``"cuda"``.
        dtype: ``"bfloat16"`` (default) or ``"float16"``.
        enabled: ``False`` runs the network as it is; ``"auto"`` enables bfloat16 on a CPU only where
            :func:`cpu_bf16_supported` (elsewhere bfloat16 is emulated and slower).

    Raises:
        ConfigError: for an unknown ``device_type``/``dtype``, or ``enabled`` not a bool or ``"auto"``.
    """

    def __init__(self, device_type: str = "cpu", dtype: str = "bfloat16", enabled: bool | str = "auto") -> None:
        super().__init__()
        if device_type not in ("cpu", "cuda"):
            raise ConfigError(f"AutocastInferer: device_type must be 'cpu' or 'cuda', got {device_type!r}.")
        if dtype not in AUTOCAST_DTYPES:
            raise ConfigError(f"AutocastInferer: dtype must be one of {sorted(AUTOCAST_DTYPES)}, got {dtype!r}.")
        if enabled == "auto":
            enabled = device_type == "cuda" or (dtype == "bfloat16" and cpu_bf16_supported())
        elif not isinstance(enabled, bool):
            raise ConfigError(f"AutocastInferer: enabled must be true, false or 'auto', got {enabled!r}.")
        self.device_type, self.dtype, self.enabled = device_type, AUTOCAST_DTYPES[dtype], enabled
        logger.debug("AutocastInferer: %s %s %s", device_type, dtype, "on" if enabled else "off")

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``network(inputs, *args, **kwargs)`` under autocast; floating outputs come back as float32."""
        if not self.enabled:
            return network(inputs, *args, **kwargs)
        with torch.autocast(self.device_type, dtype=self.dtype):
            outputs = network(inputs, *args, **kwargs)
        if isinstance(outputs, torch.Tensor) and outputs.is_floating_point():
            return outputs.float()
        return outputs
