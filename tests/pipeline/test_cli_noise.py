"""The console filter of ``naslung``'s entry point (naslung.pipeline.cli.ThirdPartyNoiseFilter)."""

from __future__ import annotations

import logging

import pytest

from naslung.pipeline.cli import ThirdPartyNoiseFilter


def _record(name: str, message: str) -> logging.LogRecord:
    return logging.LogRecord(name, logging.WARNING, __file__, 1, message, None, None)


@pytest.mark.parametrize(
    "name, message",
    [
        ("py.warnings", "UserWarning: NvImgCodecPydicomReader: nvImageCodec decoder plugin did not register ..."),
        ("monai.data.nvimgcodec_pydicom_plugin", "nvImageCodec is not available; skipping pydicom decoder plugin"),
        # MONAI 1.6's trainer on a GPU, as printed on the lent H100
        ("py.warnings", "FutureWarning: `torch.cuda.amp.GradScaler(args...)` is deprecated. Please use ..."),
    ],
)
def test_known_noise_is_dropped(name, message):
    assert not ThirdPartyNoiseFilter().filter(_record(name, message))


@pytest.mark.parametrize(
    "name, message",
    [
        ("py.warnings", "UserWarning: something a user should see"),
        ("naslung.pipeline.search.executors", "`torch.cuda.amp.GradScaler(args...)` is deprecated"),  # not py.warnings
    ],
)
def test_other_records_pass(name, message):
    assert ThirdPartyNoiseFilter().filter(_record(name, message))
