"""The ``naslung`` command line: parses arguments and calls pipeline steps; nothing else lives here."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from naslung.pipeline.cpu_allocator import retain_freed_memory
from naslung.pipeline.errors import NaslungError

__all__ = [
    "main",
    "build_parser",
    "COMMAND_MODULES",
    "KNOWN_NOISE",
    "SILENCED_AT_SOURCE",
    "ThirdPartyNoiseFilter",
    "quiet_console",
    "silence_at_source",
]

#: Each module holds one sub-command: ``add_parser(subparsers)`` registers it and sets ``func`` on its parser.
COMMAND_MODULES: tuple[str, ...] = (
    "naslung.pipeline.commands.prepare",
    "naslung.pipeline.commands.train",
    "naslung.pipeline.commands.run",
    "naslung.pipeline.commands.search",
    "naslung.pipeline.commands.ensemble",
    "naslung.pipeline.commands.evaluate",
    "naslung.pipeline.commands.export_bundle",
    "naslung.pipeline.commands.import_reference",
)


#: Third-party messages known to be noise on naslung's runs, as (logger name, text the message contains). The console
#: drops them; log files (``RUN/logs/run.log`` of ``naslung run``) keep them. Warnings arrive through the
#: ``py.warnings`` logger (``logging.captureWarnings``).
KNOWN_NOISE: tuple[tuple[str, str], ...] = (
    # MONAI's LoadImage constructs every reader; without nvImageCodec this one warns each time (once per transform
    # chain built: about 127 times in a quick run), though naslung never reads DICOM through it
    ("py.warnings", "NvImgCodecPydicomReader: nvImageCodec decoder plugin did not register"),
    ("monai.data.nvimgcodec_pydicom_plugin", "nvImageCodec is not available"),
    ("py.warnings", "`torch.jit.script` is deprecated"),
    ("py.warnings", "`torch.jit.interface` is deprecated"),
    # MONAI 1.6's SupervisedTrainer/Evaluator build their amp scaler with the deprecated torch.cuda.amp spelling:
    # once per trained network on a GPU (seen on an H100, benchmarks/results/gpu_session7/)
    ("py.warnings", "`torch.cuda.amp.GradScaler(args...)` is deprecated"),
)


#: Noise from loggers that print through their own handlers rather than the root logger's (Ray's), as (logger name,
#: text the message contains): dropped where it is logged, so it reaches neither the console nor the log file.
SILENCED_AT_SOURCE: tuple[tuple[str, str], ...] = (
    # ray.init of the local instance naslung starts (search, retraining): Ray 2.5x enables token authentication
    # for a local cluster and says so on every start, with advice that does not apply to a one-machine run
    ("ray._private.authentication.authentication_token_setup", "Token authentication is enabled for this Ray cluster"),
    # ray.init's own INFO line at each local start; naslung's executor logs the same start, with its resources, to
    # RUN/logs/ (naslung.pipeline.search.executors)
    ("ray._private.worker", "Started a local Ray instance"),
)


class ThirdPartyNoiseFilter(logging.Filter):
    """A handler filter dropping the records of :data:`KNOWN_NOISE`; everything else passes."""

    def __init__(self, noise: tuple[tuple[str, str], ...] = KNOWN_NOISE) -> None:
        super().__init__()
        self.noise = noise

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(record.name == name and text in message for name, text in self.noise)


def quiet_console(level: int) -> None:
    """Log to the console at ``level`` with Python warnings routed through logging and known noise filtered out.

    Called once by :func:`main`. Commands that write a log file (``naslung run``: ``RUN/logs/run.log``) add their
    file handler to the root logger, so the file gets every record, the filtered noise included.
    """
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    logging.captureWarnings(True)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            if not any(isinstance(f, ThirdPartyNoiseFilter) for f in handler.filters):
                handler.addFilter(ThirdPartyNoiseFilter())
    silence_at_source()


def silence_at_source() -> None:
    """Filter the loggers of :data:`SILENCED_AT_SOURCE` themselves (idempotent); called by :func:`quiet_console`."""
    for name, _ in SILENCED_AT_SOURCE:
        source = logging.getLogger(name)
        if not any(isinstance(f, ThirdPartyNoiseFilter) for f in source.filters):
            source.addFilter(ThirdPartyNoiseFilter(SILENCED_AT_SOURCE))


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every registered sub-command."""
    parser = argparse.ArgumentParser(
        prog="naslung",
        description="NAS-Lung on MONAI: lung-nodule cubes, CBAM-3D networks, POP search, ensembles and bundles.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars, warnings and errors only")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code (0 ok, 1 naslung error, 2 usage)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    quiet_console(level)
    retain_freed_memory()  # training steps reuse freed pages instead of faulting in fresh ones
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except NaslungError as err:
        print(f"naslung {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
