"""Per-machine table of measured candidate latencies, reused by later searches so that POP prunes the same way.

POP prunes an untrained candidate when it is slower than a trained network it is below (see
:class:`~naslung.pipeline.search.pop.PartialOrderPruning`), so which candidates a search trains, and which it
selects, follow the latencies it measures. Measured latency varies from run to run (load, caches, frequency
scaling); two searches with the same seed would prune and select differently. The rule:

**Latency is measured once per machine and then looked up.** The first search on a machine times each candidate
(``CandidateProfiler``) and stores the number in a JSON table; every later search on that machine, in any run
folder, reuses the stored number instead of timing again. An entry is keyed by everything the number depends on:
the machine (:func:`machine_fingerprint`: CPU model, logical cores, OS and architecture, GPU names), the
candidate (:func:`~naslung.pipeline.training.step.spec_slug`), its attention and loss head, the input shape, the batch,
the CPU threads, the device, the torch version and a digest of the ``naslung.networks`` source (so a change of the
network code measures again). Delete the file to measure afresh.

Where the table lives, first match wins:

1. the search config's ``latency_table`` (``false``: no table, measure in every search as before);
2. the environment variable ``NASLUNG_LATENCY_TABLE`` (``off``: no table);
3. ``$XDG_CACHE_HOME/naslung/latency/<machine id>.json`` (``~/.cache/...`` without ``XDG_CACHE_HOME``).

A value ending in ``.json`` names the file; any other value names a folder holding ``<machine id>.json``. One
file may hold several machines' entries (the machine id is part of each key). Each write re-reads the file,
merges and replaces it atomically (:func:`naslung.pipeline.atomic_io.write_json`), so a reader never sees a half
file; two searches writing at the same instant may drop one of their new entries, which is then measured again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import naslung.networks
from naslung.pipeline.atomic_io import write_json
from naslung.pipeline.errors import SearchError

__all__ = [
    "LATENCY_TABLE_ENV",
    "LatencyTable",
    "machine_fingerprint",
    "machine_id",
    "networks_code_digest",
    "resolve_latency_table_path",
]

logger = logging.getLogger(__name__)

#: Environment variable naming the latency table (a ``.json`` file or a folder); ``off`` disables the table.
LATENCY_TABLE_ENV = "NASLUNG_LATENCY_TABLE"

#: Values of ``NASLUNG_LATENCY_TABLE`` (case-insensitive) that disable the table.
_OFF = ("off", "none", "false", "0", "no")

_FORMAT = "naslung latency table"
_VERSION = 1


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@lru_cache(maxsize=1)
def machine_fingerprint() -> dict[str, Any]:
    """What identifies this machine's hardware for latency: CPU model, logical cores, OS, architecture, GPUs.

    The host name is left out on purpose: identical nodes of a cluster share a table (and so prune alike).
    """
    import torch

    gpus = (
        [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    )
    return {
        "cpu": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "system": platform.system(),
        "architecture": platform.machine(),
        "gpus": gpus,
    }


def machine_id(fingerprint: Mapping[str, Any] | None = None) -> str:
    """A short stable id (16 hex digits) of :func:`machine_fingerprint` (or of ``fingerprint``)."""
    text = json.dumps(dict(fingerprint or machine_fingerprint()), sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@lru_cache(maxsize=1)
def networks_code_digest() -> str:
    """A short digest (12 hex digits) of the ``naslung.networks`` source files: a code change re-measures."""
    root = Path(naslung.networks.__file__).parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode("utf-8"))
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def _from_value(value: str | os.PathLike, ident: str) -> Path:
    path = Path(os.path.expanduser(os.fspath(value)))
    return path if path.suffix == ".json" else path / f"{ident}.json"


def resolve_latency_table_path(setting: Any = None, environ: Mapping[str, str] | None = None) -> Path | None:
    """The latency table's file by the rule of this module's docstring; ``None`` when the table is disabled.

    Args:
        setting: the search config's ``latency_table``: ``None`` (look further), ``False`` or ``"off"``
            (disabled), or a ``.json`` file / a folder.
        environ: the environment (``None``: ``os.environ``).
    """
    env = os.environ if environ is None else environ
    ident = machine_id()
    if setting is False or (isinstance(setting, str) and setting.strip().lower() in _OFF):
        return None
    if setting not in (None, ""):
        return _from_value(str(setting), ident)
    value = env.get(LATENCY_TABLE_ENV, "").strip()
    if value:
        return None if value.lower() in _OFF else _from_value(value, ident)
    cache = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "naslung" / "latency" / f"{ident}.json"


class LatencyTable:
    """A JSON file of measured latencies (ms per nodule), shared by the searches of one machine.

    File layout: ``{"format", "version", "machines": {id: fingerprint}, "latency_ms": {key: ms}}``; keys come
    from :meth:`key`. Reads go to the file each time (another search may have added entries); writes merge with
    the file and replace it atomically.

    Args:
        path: the table's file; created (with its folder) on the first :meth:`put`.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    @staticmethod
    def key(
        spec_slug: str,
        *,
        input_shape: Sequence[int],
        batch: int,
        threads: int,
        device: str,
        attention: str,
        loss_name: str,
    ) -> str:
        """The entry key of one measurement: this machine, the candidate and every setting the number depends on.

        Args:
            spec_slug: the candidate (:func:`naslung.pipeline.training.step.spec_slug`).
            input_shape: one nodule's shape (C, D, H, W).
            batch: the batch whose per-nodule latency is stored.
            threads: torch CPU threads while timing.
            device: ``"cpu"``, ``"cuda"``, ...
            attention: the CBAM order the candidate is built with.
            loss_name: its loss (which decides the head).
        """
        import torch

        shape = "x".join(str(int(s)) for s in input_shape)
        return (
            f"machine={machine_id()}|net={spec_slug}|attention={attention}|loss={loss_name}|input={shape}"
            f"|batch={int(batch)}|threads={int(threads)}|device={device}|torch={torch.__version__}"
            f"|code={networks_code_digest()}"
        )

    def _read(self) -> dict[str, Any]:
        if not self.path.is_file():
            return {"format": _FORMAT, "version": _VERSION, "machines": {}, "latency_ms": {}}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise SearchError(
                f"cannot read the latency table {self.path} ({err}); delete it (latencies are measured again) or set "
                f"latency_table / {LATENCY_TABLE_ENV} to another file"
            ) from err
        if not isinstance(data, dict) or not isinstance(data.get("latency_ms"), dict):
            raise SearchError(
                f"{self.path} is not a latency table (no 'latency_ms' mapping); delete it or point latency_table / "
                f"{LATENCY_TABLE_ENV} elsewhere"
            )
        return data

    def entries(self) -> dict[str, float]:
        """Every stored ``{key: ms}``."""
        return {str(k): float(v) for k, v in self._read()["latency_ms"].items()}

    def get(self, key: str) -> float | None:
        """The stored latency (ms) of ``key``, or ``None``."""
        value = self._read()["latency_ms"].get(key)
        return None if value is None else float(value)

    def put(self, entries: Mapping[str, float]) -> None:
        """Store ``{key: ms}`` (merged with what the file holds now), atomically.

        A table that cannot be written (read-only cache, full disk) costs only the reuse: it is logged, not
        raised.
        """
        if not entries:
            return
        data = self._read()
        data.setdefault("machines", {})[machine_id()] = machine_fingerprint()
        data["latency_ms"].update((str(k), float(v)) for k, v in entries.items())
        data["format"], data["version"] = _FORMAT, _VERSION
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_json(self.path, data)
        except OSError as err:
            logger.warning("cannot write the latency table %s (%s); later searches will measure again", self.path, err)

    def __len__(self) -> int:
        return len(self._read()["latency_ms"])
