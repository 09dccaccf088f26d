"""Residual streams: the groups that write into the tensor passed from block to block, and the layers that read it."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from prunectl.structure.groups import ChannelGroup, Consumer


@dataclass
class _Stream:
    writers: list[ChannelGroup] = field(default_factory=list)
    readers: list[Consumer] = field(default_factory=list)


class ResidualStreams:
    """Walk a residual net in forward order: `write` each conv (group) whose output is added into the current
    stream, `read` each layer that reads it, `start` a new stream where a projection (or a parameter-free
    downsampling shortcut) begins one. `resolve` then gives each writer its stream's readers as consumers and
    its tie: "residual" with the other writers of its stream (of every stream when `across` is True, as where
    zero-padding shortcuts carry one stream's channels into the next)."""

    def __init__(self) -> None:
        self.streams = [_Stream()]

    def write(self, name: str, channels: int, producers: tuple[str, ...], norms: tuple[str, ...],
              meta: dict[str, Any] | None = None) -> str:
        self.streams[-1].writers.append(ChannelGroup(name, channels, producers, norms, (), prunable=False,
                                                     meta=meta or {}))
        return name

    def read(self, consumer: Consumer) -> None:
        self.streams[-1].readers.append(consumer)

    def start(self) -> None:
        self.streams.append(_Stream())

    def resolve(self, across: bool = False) -> dict[str, ChannelGroup]:
        everyone = [w.name for s in self.streams for w in s.writers]
        out = {}
        for stream in self.streams:
            mates = everyone if across else [w.name for w in stream.writers]
            for w in stream.writers:
                tied = tuple(n for n in mates if n != w.name)
                out[w.name] = replace(w, consumers=tuple(stream.readers), tie="residual" if tied else None,
                                      tied_with=tied)
        return out


def in_order(items: list[ChannelGroup | str], resolved: dict[str, ChannelGroup]) -> list[ChannelGroup]:
    """Groups in forward order, with the stream writers (listed by name) replaced by their resolved group."""
    return [resolved[i] if isinstance(i, str) else i for i in items]
