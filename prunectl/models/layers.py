"""Pieces shared by the model families: channel selection, selection specs, the seed's initialisers, checks."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from prunectl.errors import BadValueError

# A selection spec in a config: None = all channels (or the first `count`), an int = the first that many channels,
# a list = exactly those channel indices (sorted, distinct).
SelectSpec = int | list[int] | None


class ChannelSelection(nn.Module):
    """Keeps the channels whose entry in the 0/1 buffer `indexes` is non-zero (Network Slimming's `channel_selection`).

    It sits after a BatchNorm whose output is shared (a residual or dense connection), so pruning can drop
    channels for one consumer without shrinking the shared tensor. `indexes` is a float buffer and therefore part
    of the state_dict (same key as the seed's parameter, so seed checkpoints load).

    >>> sel = ChannelSelection(4, keep=[0, 2])
    >>> sel(torch.ones(1, 4, 2, 2)).shape
    torch.Size([1, 2, 2, 2])
    """

    indexes: torch.Tensor

    def __init__(self, num_channels: int, keep: Sequence[int] | None = None) -> None:
        super().__init__()
        indexes = torch.ones(num_channels)
        if keep is not None:
            indexes.zero_()
            indexes[list(keep)] = 1.0
        self.register_buffer("indexes", indexes)

    @property
    def num_channels(self) -> int:
        return self.indexes.numel()

    def kept(self) -> list[int]:
        """Indices of the channels that pass."""
        return [int(i) for i in torch.nonzero(self.indexes).flatten().tolist()]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, torch.nonzero(self.indexes).flatten()]

    def extra_repr(self) -> str:
        return f"{self.num_channels} -> {int(torch.count_nonzero(self.indexes))}"


def resolve_select(spec: Any, num_channels: int, count: int | None = None, where: str = "selection") -> list[int]:
    """Turn a selection spec into the sorted list of kept indices, checking it against the layer.

    `count`, when given, is the number of channels the next layer expects (None spec then means the first
    `count` channels; an explicit spec must have exactly that many).
    """
    if spec is None:
        indices = list(range(num_channels if count is None else count))
    elif isinstance(spec, bool):
        raise BadValueError(f"{where}: expected a count or a list of channel indices, got {spec!r}")
    elif isinstance(spec, int):
        indices = list(range(spec))
    else:
        indices = [int(i) for i in spec]
    if not indices:
        raise BadValueError(f"{where}: keeps no channel")
    if sorted(set(indices)) != indices:
        raise BadValueError(f"{where}: channel indices must be sorted and distinct, got {indices}")
    if indices[0] < 0 or indices[-1] >= num_channels:
        raise BadValueError(f"{where}: indices must lie in 0..{num_channels - 1}, got {indices}")
    if count is not None and len(indices) != count:
        raise BadValueError(f"{where}: selects {len(indices)} channels but the next layer takes {count}")
    return indices


def describe_select(kept: Sequence[int], num_channels: int | None = None) -> SelectSpec:
    """The canonical spec for kept indices: None if all of `num_channels`, a count if a prefix, else the list."""
    kept = list(kept)
    if num_channels is not None and len(kept) == num_channels:
        return None
    if kept == list(range(len(kept))):
        return len(kept)
    return kept


def as_width(value: Any, where: str) -> int:
    """A positive layer width from a config entry (rejects bools, floats, strings and zero)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BadValueError(f"{where}: a width must be a positive integer, got {value!r}")
    return value


def init_conv_fan_out(conv: nn.Conv2d) -> None:
    """The seed's conv init: normal(0, sqrt(2 / (k_h * k_w * out_channels))), bias zero."""
    n = conv.kernel_size[0] * conv.kernel_size[1] * conv.out_channels
    nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / n))
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def init_bn(bn: nn.modules.batchnorm._BatchNorm, weight: float) -> None:
    """BN scale `weight`, shift zero, fresh running statistics."""
    bn.reset_running_stats()
    nn.init.constant_(bn.weight, weight)
    nn.init.zeros_(bn.bias)


def seed_init(model: nn.Module, bn_weight: float) -> None:
    """The seed's CIFAR initialisation: every conv as `init_conv_fan_out`, every BN scale `bn_weight` and shift
    0, every Linear torch's default (the seed leaves it alone)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            init_conv_fan_out(m)
        elif isinstance(m, nn.BatchNorm2d):
            init_bn(m, bn_weight)
        elif isinstance(m, nn.Linear):
            m.reset_parameters()


def count_pools(cfg: Sequence[Any]) -> int:
    return sum(1 for v in cfg if v == "M")


def check_spatial(input_size: Sequence[int], downsamples: int, family: str) -> None:
    """Refuse inputs too small to survive `downsamples` halvings (the error names the smallest size that works)."""
    need = 2**downsamples
    if min(input_size[1:]) < need:
        raise BadValueError(
            f"{family}: input {tuple(input_size)} is too small for {downsamples} downsamplings (need >= {need} pixels)"
        )
