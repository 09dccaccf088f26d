"""Residual streams: the groups that write into the tensor passed from block to block, and the layers that read it."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from prunectl.structure.groups import ChannelGroup, Consumer


class ResidualStreams:
    """Walk a residual net in forward order: `write` each conv (group) whose output is added into the current
    stream, `read` each layer that reads it, `start` a new stream where a projection (or a parameter-free
    downsampling shortcut) begins one. `resolve` then gives each writer, as consumers, the readers after it in
    its stream, and its tie: "residual" with the other writers of its stream.

    With `across` (zero-padding shortcuts, which carry every channel of one stream into the same index of the
    next), a writer's channels reach every later reader of the net, and all writers are tied together.
    """

    def __init__(self) -> None:
        self.stream = 0
        self.readers: list[tuple[int, Consumer]] = []
        self.writers: list[tuple[int, int, ChannelGroup]] = []  # (stream, first reader after it, group)

    def write(self, name: str, channels: int, producers: tuple[str, ...], norms: tuple[str, ...],
              meta: dict[str, Any] | None = None) -> str:
        group = ChannelGroup(name, channels, producers, norms, (), prunable=False, meta=meta or {})
        self.writers.append((self.stream, len(self.readers), group))
        return name

    def read(self, consumer: Consumer) -> None:
        self.readers.append((self.stream, consumer))

    def start(self) -> None:
        self.stream += 1

    def resolve(self, across: bool = False) -> dict[str, ChannelGroup]:
        out = {}
        for stream, first, group in self.writers:
            readers = tuple(c for s, c in self.readers[first:] if across or s == stream)
            tied = tuple(g.name for s, _, g in self.writers if g.name != group.name and (across or s == stream))
            out[group.name] = replace(group, consumers=readers, tie="residual" if tied else None, tied_with=tied)
        return out


def in_order(items: list[ChannelGroup | str], resolved: dict[str, ChannelGroup]) -> list[ChannelGroup]:
    """Groups in forward order, with the stream writers (listed by name) replaced by their resolved group."""
    return [resolved[i] if isinstance(i, str) else i for i in items]
