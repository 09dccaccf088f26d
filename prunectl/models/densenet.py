"""DenseNet for CIFAR (no bottleneck, compression 1) with Network Slimming's channel selection layers."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from prunectl.errors import BadValueError
from prunectl.models.base import Arch, ArchModel, register_family, register_model
from prunectl.models.layers import (
    ChannelSelection,
    as_width,
    check_spatial,
    resolve_select,
    seed_init,
)
from prunectl.models.preresnet import describe_selections


class DenseLayer(nn.Module):
    """bn1 -> select -> ReLU -> conv1 (3x3, selected -> growth); the output is concatenated to the input."""

    def __init__(self, in_channels: int, keep: list[int], growth_rate: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.select = ChannelSelection(in_channels, keep)
        self.conv1 = nn.Conv2d(len(keep), growth_rate, 3, padding=1, bias=False)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((x, self.conv1(self.relu(self.select(self.bn1(x))))), 1)


class Transition(nn.Module):
    """bn1 -> select -> ReLU -> conv1 (1x1, selected -> in_channels) -> 2x2 average pool."""

    def __init__(self, in_channels: int, keep: list[int]) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.select = ChannelSelection(in_channels, keep)
        self.conv1 = nn.Conv2d(len(keep), in_channels, 1, bias=False)
        self.relu = nn.ReLU()
        self.pool = nn.AvgPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.conv1(self.relu(self.select(self.bn1(x)))))


def layers_per_block(depth: Any) -> int:
    if not isinstance(depth, int) or depth < 7 or (depth - 4) % 3:
        raise BadValueError(f"densenet: depth must be 3n+4 (40, ...), got {depth!r}")
    return (depth - 4) // 3


def default_cfg(depth: int, growth_rate: int) -> list[int]:
    """Channels seen by each selection layer when nothing is pruned: n dense layers + a transition, per block."""
    n = layers_per_block(depth)
    cfg, width = [], 2 * growth_rate
    for _ in range(3):
        cfg += [width + growth_rate * i for i in range(n + 1)]
        width += growth_rate * n
    return cfg


@register_family
class DenseNet(ArchModel):
    """DenseNet-(3n+4) from the seed's `cifar/network-slimming/models/densenet.py` (same state_dict keys).

    Stem `conv1` (3x3 -> 2 * growth); `dense1`, `trans1`, `dense2`, `trans2`, `dense3` (Sequentials of
    `DenseLayer`, and `Transition`s that keep the width); final `bn`, `select`, ReLU, global average pool, `fc`.
    Every BN is followed by a `ChannelSelection`; slimming prunes only those, so convs keep their outputs and
    `cfg` lists the channels each selection layer passes on (3n + 3 numbers: n per dense block, one per
    transition, one before `fc`). `select` says which (None = the first cfg-many, the unpruned case).

    >>> from prunectl.models import create_model
    >>> m = create_model("densenet40")
    >>> len(m.dense1), m.fc.in_features
    (12, 456)
    """

    family = "densenet"

    def __init__(self, arch: Arch) -> None:
        super().__init__(arch)
        depth, growth = arch.config["depth"], as_width(arch.config.get("growth_rate", 12), "densenet growth_rate")
        n = layers_per_block(depth)
        cfg = [as_width(v, f"densenet cfg[{i}]")
               for i, v in enumerate(arch.config.get("cfg") or default_cfg(depth, growth))]
        select = arch.config.get("select") or [None] * (3 * n + 3)
        if len(cfg) != 3 * n + 3 or len(select) != 3 * n + 3:
            raise BadValueError(f"densenet: cfg and select for depth {depth} need {3 * n + 3} entries each, got "
                                f"{len(cfg)} and {len(select)}")
        check_spatial(arch.input_size, 2, self.family)
        self.depth, self.growth_rate = depth, growth
        width = 2 * growth
        self.conv1 = nn.Conv2d(arch.input_size[0], width, 3, padding=1, bias=False)
        picks = iter(range(3 * n + 3))

        def keep(i: int, channels: int) -> list[int]:
            return resolve_select(select[i], channels, cfg[i], f"densenet select[{i}]")

        dense, trans = [], []
        for b in range(3):
            layers = []
            for _ in range(n):
                i = next(picks)
                layers.append(DenseLayer(width, keep(i, width), growth))
                width += growth
            dense.append(nn.Sequential(*layers))
            if b < 2:
                i = next(picks)
                trans.append(Transition(width, keep(i, width)))
        self.dense1, self.dense2, self.dense3 = dense
        self.trans1, self.trans2 = trans
        self.bn = nn.BatchNorm2d(width)
        self.select = ChannelSelection(width, keep(3 * n + 2, width))
        self.relu = nn.ReLU()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cfg[-1], arch.num_classes)
        self.reset_parameters()

    def selections(self) -> list[tuple[ChannelSelection, int]]:
        """Each selection layer, in config order, with the input width of the layer it feeds."""
        units: list[Any] = [*self.dense1, self.trans1, *self.dense2, self.trans2, *self.dense3]
        return [(u.select, u.conv1.in_channels) for u in units] + [(self.select, self.fc.in_features)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.trans1(self.dense1(self.conv1(x)))
        x = self.dense3(self.trans2(self.dense2(x)))
        x = self.relu(self.select(self.bn(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))

    def reset_parameters(self) -> None:
        # Seed: conv normal(0, sqrt(2 / (k*k*out))), BN scale 0.5, Linear torch's default.
        seed_init(self, 0.5)

    def to_arch(self) -> Arch:
        pairs = self.selections()
        config = {"depth": self.depth, "growth_rate": self.growth_rate, "cfg": [width for _, width in pairs],
                  "select": describe_selections([sel.kept() for sel, _ in pairs])}
        return Arch(self.family, config, self.num_classes, self.input_size, name=self.arch_name)


@register_model("densenet40")
def densenet40(num_classes: int = 10, input_size: tuple[int, int, int] = (3, 32, 32)) -> Arch:
    """DenseNet-40 (growth 12, 12 layers per block) as Network Slimming prunes it."""
    config = {"depth": 40, "growth_rate": 12, "cfg": default_cfg(40, 12), "select": None}
    return Arch(DenseNet.family, config, num_classes, input_size, name="densenet40")
