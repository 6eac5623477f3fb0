"""The architecture spec of NAS-Lung's general network: the paper's ``[4,4,[4,4],[4,8],[8,8]]`` notation as a value."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from naslung.networks.errors import ConfigError

__all__ = ["ArchSpec", "DEFAULT_KERNEL", "PAPER_MODEL_1"]

_EXAMPLE = "[4,4,[4,4],[4,8],[8,8]]"

DEFAULT_KERNEL = 3
"""Kernel size of a residual block's convolutions when the spec does not name one (the paper's 3x3x3)."""


def _is_int(value: Any) -> bool:
    """True for real integers (``bool`` is not a channel count)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _check_channels(
    stage1: Any, stage2: Any, stages: Sequence[Any], shown: str | None
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """Validate channel counts; return stages 3-5 as tuples. ``shown`` names the spec in messages."""
    channels, _ = _check_blocks(stage1, stage2, stages, shown)
    return channels


def _check_kernel(value: Any, where: str, name: str) -> int:
    if not _is_int(value) or value < 1 or value % 2 == 0:
        raise ConfigError(
            f"{where}: {name} kernel sizes must be odd positive integers, got {value!r}; write a block with a "
            f"kernel other than {DEFAULT_KERNEL} as [channels, kernel], e.g. [4,4,[4,[8,5]],[8],[8]]."
        )
    return int(value)


def _check_blocks(
    stage1: Any, stage2: Any, stages: Sequence[Any], shown: str | None
) -> tuple[tuple[tuple[int, ...], ...], tuple[tuple[int, ...], ...]]:
    """Validate stages 1-5; return (channels, kernels) of stages 3-5. A block is ``c`` or ``[c, kernel]``."""
    where = "architecture spec" if shown is None else f"architecture spec {shown}"
    for name, value in (("stage1", stage1), ("stage2", stage2)):
        if not _is_int(value) or value < 1:
            raise ConfigError(
                f"{where}: {name} channels must be a positive integer, got {value!r}; "
                f"write the spec as e.g. {_EXAMPLE}."
            )
    checked, kernels = [], []
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
        widths, sizes = [], []
        for block in blocks:
            channels, kernel = block, DEFAULT_KERNEL
            if isinstance(block, Sequence) and not isinstance(block, (str, bytes)) and len(block) == 2:
                channels, kernel = block[0], _check_kernel(block[1], where, name)
            if not _is_int(channels) or channels < 1:
                raise ConfigError(
                    f"{where}: {name} block channels must be positive integers, got {channels!r} in "
                    f"{list(blocks)!r}; write the spec as e.g. {_EXAMPLE}."
                )
            widths.append(int(channels))
            sizes.append(kernel)
        checked.append(tuple(widths))
        kernels.append(tuple(sizes))
    return tuple(checked), tuple(kernels)


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

    Every residual block has 3^3 convolutions unless the spec names another (odd) kernel: such a block is written
    ``[channels, kernel]``, e.g. ``[4,4,[4,[8,5]],[8],[8]]`` (the DNAS search, after CovidNet3D, also chooses kernel
    sizes). Specs of 3^3 blocks only print exactly as the paper's notation.

    Args:
        stage1: output channels of Conv1.
        stage2: output channels of Conv2.
        stage3: output channels of each residual block of stage 3 (L blocks).
        stage4: output channels of each residual block of stage 4 (M blocks).
        stage5: output channels of each residual block of stage 5 (N blocks).
        kernels: kernel size of each residual block of stages 3-5, three tuples shaped like the stages;
            ``None``: 3 everywhere.

    Raises:
        ConfigError: when a channel count is not a positive integer, a kernel not an odd positive integer, or a
            stage has no block.

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
    kernels: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None = None

    def __post_init__(self) -> None:
        stages = _check_channels(self.stage1, self.stage2, (self.stage3, self.stage4, self.stage5), shown=None)
        for name, blocks in zip(("stage3", "stage4", "stage5"), stages, strict=True):
            object.__setattr__(self, name, blocks)
        kernels = self.kernels if self.kernels is not None else [(DEFAULT_KERNEL,) * len(b) for b in stages]
        if isinstance(kernels, (str, bytes)) or not isinstance(kernels, Sequence) or len(kernels) != 3:
            raise ConfigError(f"architecture spec: kernels must be three tuples (stages 3-5), got {kernels!r}.")
        checked = []
        for name, blocks, sizes in zip(("stage3", "stage4", "stage5"), stages, kernels, strict=True):
            sizes = tuple(sizes)
            if len(sizes) != len(blocks):
                raise ConfigError(
                    f"architecture spec: {name} has {len(blocks)} block(s) but {len(sizes)} kernel size(s) {sizes!r}."
                )
            checked.append(tuple(_check_kernel(k, "architecture spec", name) for k in sizes))
        object.__setattr__(self, "kernels", tuple(checked))

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
        stages, kernels = _check_blocks(items[0], items[1], items[2:], shown=shown)
        return cls(items[0], items[1], *stages, kernels=kernels)  # type: ignore[arg-type]

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
        """The spec as plain JSON primitives: ``[4, 4, [4, 4], [4, 8], [8, 8]]`` (a block of another kernel than 3:
        ``[channels, kernel]``)."""
        stages = [
            [c if k == DEFAULT_KERNEL else [c, k] for c, k in zip(blocks, sizes, strict=True)]
            for blocks, sizes in zip(self.stages, self.kernel_sizes, strict=True)
        ]
        return [self.stage1, self.stage2, *stages]

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
    def kernel_sizes(self) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """Kernel size of each residual block of stages 3, 4, 5 (3 unless the spec names another)."""
        assert self.kernels is not None  # set by __post_init__
        return self.kernels

    def with_default_kernels(self) -> ArchSpec:
        """The same depths and widths with 3^3 blocks everywhere (the form the POP search space holds)."""
        return ArchSpec(self.stage1, self.stage2, self.stage3, self.stage4, self.stage5)

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
