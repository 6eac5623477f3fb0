"""naslung.pipeline.data: the ``prepare`` step and what it reads and writes: the LIDC-IDRI cohort and its folds, CT scan
reading and writing, the embedded synthetic data set and its synthetic CT, pylidc on today's stack, and datalists.

The folder also holds the packaged default cohort (``cohort_default.csv.gz``, ``cohort_default.json``). The package
imports nothing itself, so that a module can import one of them without loading the others (a bundle's fine-tuning
code ships :mod:`naslung.pipeline.data.datalists` alone).
"""

from __future__ import annotations

__all__: list[str] = []
