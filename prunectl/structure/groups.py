"""What a structure provider lists: channel groups (channels removed together, with every layer they touch) and
block groups (residual branches that can be removed, leaving their shortcut)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# {channel group name: kept channel indices (sorted, in the group's numbering 0 .. channels - 1)}
KeepMap = dict[str, list[int]]

TIES = (None, "residual", "concat")


@dataclass(frozen=True)
class Consumer:
    """A layer that reads a group's channels, and where they land in its input (dim 1).

    Group channel c feeds input index `offset + c` (`offset` > 0 inside a concatenation); a Linear after a
    flatten reads `positions` inputs per channel, (offset + c) * positions + p for p < positions. Where the layer
    reads through a `ChannelSelection` (module `selection`, keeping the channels `selected` of the tensor), the
    mapping first goes through that selection: a channel it drops reaches no input.

    >>> Consumer("classifier.0", positions=4).inputs(1)
    [4, 5, 6, 7]
    >>> Consumer("conv1", selected=(0, 2, 3), selection="select").inputs(2)
    [1]
    """

    module: str
    offset: int = 0
    positions: int = 1
    selected: tuple[int, ...] | None = None
    selection: str | None = None

    def inputs(self, channel: int) -> list[int]:
        """The consumer's input indices (dim 1 of its input) that group channel `channel` feeds."""
        index = self.offset + channel
        if self.selected is not None:
            if index not in self.selected:
                return []
            index = self.selected.index(index)
        return [index * self.positions + p for p in range(self.positions)]


@dataclass(frozen=True)
class ChannelGroup:
    """A set of channels removed together, with every layer that shrinks with it.

    kind "conv": the channels are output channels `0 .. channels - 1` of each of the `producers` (the conv(s)
    whose outputs they are) and of each of the `norms` (the BN on them, none where the family has no BN).
    kind "select": a BN (`norms`) normalises a shared tensor (a residual or dense connection) and feeds a
    `ChannelSelection` (`meta["select"]`) that passes its channels `meta["selected"]`; the group's channels are
    the selected ones, in order (Network Slimming's channel_selection). There are no producers; removing a
    channel changes the selection, not the BN.

    `consumers` lists every layer that reads the channels (see `Consumer` for the index mapping). `tie` says
    what couples the channels to other groups: None, "residual" (summed into a residual stream with the groups
    `tied_with`) or "concat" (concatenated into a dense block's input); `prunable` is False where the provider
    cannot cut the group (tied outputs). `meta` holds family facts: "stage", "block" (1-based over the net,
    removed blocks included), "conv_id" (the seeds' conv numbering, where they number convs), "position".
    """

    name: str
    channels: int
    producers: tuple[str, ...]
    norms: tuple[str, ...]
    consumers: tuple[Consumer, ...]
    kind: str = "conv"
    tie: str | None = None
    tied_with: tuple[str, ...] = ()
    prunable: bool = True
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in ("conv", "select") or self.tie not in TIES:
            raise ValueError(f"channel group {self.name}: kind {self.kind!r} / tie {self.tie!r} unknown")

    @property
    def conv(self) -> str | None:
        """The producing conv, where there is exactly one."""
        return self.producers[0] if len(self.producers) == 1 else None

    @property
    def bn(self) -> str | None:
        """The group's BN, where it has one."""
        return self.norms[0] if self.norms else None

    @property
    def selection(self) -> str | None:
        """The `ChannelSelection` a "select" group prunes through."""
        return self.meta.get("select")

    def norm_index(self, channel: int) -> int:
        """The BN channel that group channel `channel` is (they differ for "select" groups)."""
        return int(self.meta["selected"][channel]) if self.kind == "select" else channel


@dataclass(frozen=True)
class BlockGroup:
    """A residual block whose branch can be removed, leaving its shortcut (Sparse Structure Selection).

    `name` is the block's module; `stage` and `index` place it (0-based), `first` is True for the first block
    of its stage. `shortcut` names the projection / downsampling module that stays when the branch goes (None
    for an identity shortcut: the block then disappears from the function). `output` is the branch's last layer
    (its BN, or its conv where none follows): its output is the branch's, so scaling or zeroing that layer's
    weight (and bias) scales or zeroes the branch. `groups` are the channel groups inside the branch (they go
    with it). `meta["block"]` numbers blocks from 1 over the net.
    """

    name: str
    stage: int
    index: int
    first: bool
    shortcut: str | None
    output: str
    groups: tuple[str, ...] = ()
    meta: Mapping[str, Any] = field(default_factory=dict)
