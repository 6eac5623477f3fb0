"""The architecture spec of NAS-Lung's general network: the paper's ``[4,4,[4,4],[4,8],[8,8]]`` notation as a value."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from naslung.pipeline.errors import ConfigError

__all__ = ["ArchSpec", "PAPER_MODEL_1"]

_EXAMPLE = "[4,4,[4,4],[4,8],[8,8]]"


def _is_int(value: Any) -> bool:
    """True for real integers (``bool`` is not a channel count)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _check_channels(
    stage1: Any, stage2: Any, stages: Sequence[Any], shown: str | None
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """Validate channel counts; return stages 3-5 as tuples. ``shown`` names the spec in messages."""
    where = "architecture spec" if shown is None else f"architecture spec {shown}"
    for name, value in (("stage1", stage1), ("stage2", stage2)):
        if not _is_int(value) or value < 1:
            raise ConfigError(
                f"{where}: {name} channels must be a positive integer, got {value!r}; "
                f"write the spec as e.g. {_EXAMPLE}."
            )
    checked = []
    for name, value in zip(("stage3", "stage4", "stage5"), stages, strict=True):
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise ConfigError(
                f"{where}: {name} must be a list of block channels, got {value!r}; write the spec as e.g. {_EXAMPLE}."
            )
        blocks = tuple(value)
        if not blocks:
            raise ConfigError(
                f"{where}: {name} has no residual block; each of stages 3-5 needs at least one, e.g. {_EXAMPLE}."
            )
        for channels in blocks:
            if not _is_int(channels) or channels < 1:
                raise ConfigError(
                    f"{where}: {name} block channels must be positive integers, got {channels!r} in "
                    f"{list(blocks)!r}; write the spec as e.g. {_EXAMPLE}."
                )
        checked.append(blocks)
    return checked[0], checked[1], checked[2]


@dataclass(frozen=True)
class ArchSpec:
    """Depth and width of one candidate of NAS-Lung's general 3D network (Jiang et al. 2021, Sec. 3.1, eq. 7).

    The paper writes a candidate as ``[C1, C2, [C_1^3, ..., C_L^3], [C_1^4, ..., C_M^4], [C_1^5, ..., C_N^5]]``:
    the output channels of Conv1 (stage 1) and Conv2 (stage 2), then the output channels of each residual
    block of stages 3, 4 and 5. Table 5's Model-1 is ``[4,4,[4,4],[4,8],[8,8]]``.

    The spec is an immutable, hashable value (usable in sets and as a dict key); ``str(spec)`` is the paper's
    notation without spaces and ``ArchSpec.parse(str(spec)) == spec``. ``to_list()`` gives the same structure as
    plain JSON primitives so a MONAI bundle config can hold it.

    Validation here is structural only (positive integer channels, at least one block per stage). The
    search-space rules of eq. (5)-(6) (depth balance, allowed widths, 3 <= L+M+N <= 9) are checked by the search.

    Args:
        stage1: output channels of Conv1.
        stage2: output channels of Conv2.
        stage3: output channels of each residual block of stage 3 (L blocks).
        stage4: output channels of each residual block of stage 4 (M blocks).
        stage5: output channels of each residual block of stage 5 (N blocks).

    Raises:
        ConfigError: when a channel count is not a positive integer or a stage has no block.

    Example::

        spec = ArchSpec.parse("[4,4,[4,4],[4,8],[8,8]]")
        spec.depths  # (2, 2, 2)
        str(spec)  # '[4,4,[4,4],[4,8],[8,8]]'
    """

    stage1: int
    stage2: int
    stage3: tuple[int, ...]
    stage4: tuple[int, ...]
    stage5: tuple[int, ...]

    def __post_init__(self) -> None:
        stages = _check_channels(self.stage1, self.stage2, (self.stage3, self.stage4, self.stage5), shown=None)
        for name, blocks in zip(("stage3", "stage4", "stage5"), stages, strict=True):
            object.__setattr__(self, name, blocks)

    # ----------------------------------------------------------------------------------------------- parsing
    @classmethod
    def parse(cls, text: str) -> ArchSpec:
        """Parse the paper's notation, e.g. ``"[4,4,[4,4],[4,8],[8,8]]"`` (spaces allowed).

        The three-list form of eq. (7), ``"[[4,4],[4,8],[8,8]]"``, is accepted too; stages 1 and 2 then get
        the paper's fixed 4 channels.

        Args:
            text: the spec as text.

        Raises:
            ConfigError: when the text is not the notation above.
        """
        if not isinstance(text, str):
            raise ConfigError(f"architecture spec: expected text like {_EXAMPLE}, got {type(text).__name__}.")
        try:
            value = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(
                f"architecture spec {text!r} is not a nested list of integers ({err.msg} at character {err.pos}); "
                f"write it as e.g. {_EXAMPLE}."
            ) from None
        return cls.from_list(value, source=text)

    @classmethod
    def from_list(cls, value: Any, source: str | None = None) -> ArchSpec:
        """Build a spec from nested lists ``[c1, c2, [..], [..], [..]]`` (or eq. (7)'s ``[[..], [..], [..]]``).

        Args:
            value: the nested list (tuples accepted).
            source: the original text, only to name it in error messages.

        Raises:
            ConfigError: when the structure or a value is wrong.
        """
        shown = source if source is not None else repr(value)
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise ConfigError(f"architecture spec {shown}: expected a list like {_EXAMPLE}.")
        items = list(value)
        if len(items) == 3 and all(isinstance(v, (list, tuple)) for v in items):
            items = [4, 4, *items]
        if len(items) != 5:
            raise ConfigError(
                f"architecture spec {shown}: expected 5 entries (stage-1 and stage-2 channels, then the block "
                f"channels of stages 3, 4, 5), got {len(items)}; write it as e.g. {_EXAMPLE}."
            )
        stages = _check_channels(items[0], items[1], items[2:], shown=shown)
        return cls(items[0], items[1], *stages)

    @classmethod
    def from_json(cls, value: str | Sequence[Any]) -> ArchSpec:
        """Inverse of :meth:`to_json`; also accepts the already-decoded list of :meth:`to_list`."""
        return cls.parse(value) if isinstance(value, str) else cls.from_list(value)

    @classmethod
    def coerce(cls, value: ArchSpec | str | Sequence[Any]) -> ArchSpec:
        """Return ``value`` as a spec: an :class:`ArchSpec`, its text, or its nested lists."""
        if isinstance(value, ArchSpec):
            return value
        return cls.from_json(value)

    # ---------------------------------------------------------------------------------------------- printing
    def to_list(self) -> list[Any]:
        """The spec as plain JSON primitives: ``[4, 4, [4, 4], [4, 8], [8, 8]]``."""
        return [self.stage1, self.stage2, list(self.stage3), list(self.stage4), list(self.stage5)]

    def to_json(self) -> str:
        """The spec as JSON text, identical to ``str(spec)``."""
        return str(self)

    def __str__(self) -> str:
        return json.dumps(self.to_list(), separators=(",", ":"))

    def __repr__(self) -> str:
        return f"ArchSpec.parse({str(self)!r})"

    # ------------------------------------------------------------------------------------------- properties
    @property
    def stages(self) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """Block channels of stages 3, 4, 5."""
        return (self.stage3, self.stage4, self.stage5)

    @property
    def depths(self) -> tuple[int, int, int]:
        """``(L, M, N)``: the number of residual blocks of stages 3, 4, 5."""
        return (len(self.stage3), len(self.stage4), len(self.stage5))

    @property
    def num_blocks(self) -> int:
        """``L + M + N``."""
        return sum(self.depths)

    @property
    def out_channels(self) -> int:
        """Channels of the last block of stage 5, i.e. the length of the penultimate feature vector."""
        return self.stage5[-1]

    def block_channels(self) -> Iterator[tuple[int, int]]:
        """Yield ``(stage, channels)`` for every residual block in order, stages numbered 3-5."""
        for stage, blocks in zip((3, 4, 5), self.stages, strict=True):
            for channels in blocks:
                yield stage, channels


PAPER_MODEL_1 = ArchSpec.parse("[4,4,[4,4],[4,8],[8,8]]")
"""Table 5's Model-1, the best single searched network of the paper."""
