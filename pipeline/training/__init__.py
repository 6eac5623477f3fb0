"""naslung.pipeline.training: the ``train`` step: one network per held-out fold with MONAI's Ignite engines, and the
config components its ``train.json`` names (handlers, inferer, learning-rate schedule), plus importing the authors'
reference weights as a trained network.

The package imports nothing itself, so that a module can import one of them without loading the others (a bundle's
fine-tuning code ships the handlers, inferer and schedule without the training step).
"""

from __future__ import annotations

__all__: list[str] = []
