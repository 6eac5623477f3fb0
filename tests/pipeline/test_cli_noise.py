"""The console filter of ``naslung``'s entry point (naslung.pipeline.cli.ThirdPartyNoiseFilter)."""

from __future__ import annotations

import logging

import pytest

from naslung.pipeline.cli import ThirdPartyNoiseFilter, silence_at_source


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


@pytest.mark.parametrize(
    "name, notice",
    [
        [
            "ray._private.authentication.authentication_token_setup",
            "Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled to opt out.",
        ],
        ["ray._private.worker", "Started a local Ray instance."],
    ],
)
def test_ray_start_notices_are_silenced_where_they_are_logged(name, notice):
    """Ray logs through its own handlers, which the root handlers' filter never sees; quiet_console filters the
    logger itself (silence_at_source, which quiet_console calls), so the notices Ray prints at each local start are
    gone while its other messages pass."""
    silence_at_source()
    source = logging.getLogger(name)
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    source.addHandler(handler)
    try:
        source.warning(notice)
        source.warning("a real problem")
    finally:
        source.removeHandler(handler)
    assert seen == ["a real problem"]
