"""Pre-activation bottleneck ResNet for CIFAR with Network Slimming's channel selection layers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

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

EXPANSION = 4
STAGE_PLANES = (16, 32, 64)
STAGE_STRIDES = (1, 2, 2)


class PreActBottleneck(nn.Module):
    """bn1 -> select -> ReLU -> conv1 (1x1) -> bn2 -> ReLU -> conv2 (3x3, stride) -> bn3 -> ReLU -> conv3 (1x1),
    plus the block input (through `downsample`, a 1x1 conv, where the shape changes). No ReLU after the sum."""

    def __init__(self, in_channels: int, widths: Sequence[int], keep: Sequence[int], planes: int, stride: int) -> None:
        super().__init__()
        selected, mid1, mid2 = widths
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.select = ChannelSelection(in_channels, keep)
        self.conv1 = nn.Conv2d(selected, mid1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid1)
        self.conv2 = nn.Conv2d(mid1, mid2, 3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(mid2)
        self.conv3 = nn.Conv2d(mid2, planes * EXPANSION, 1, bias=False)
        self.relu = nn.ReLU()
        self.downsample: nn.Sequential | None = None
        if stride != 1 or in_channels != planes * EXPANSION:
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, planes * EXPANSION, 1, stride=stride, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.relu(self.select(self.bn1(x))))
        out = self.conv2(self.relu(self.bn2(out)))
        out = self.conv3(self.relu(self.bn3(out)))
        return out + (x if self.downsample is None else self.downsample(x))


class PreActShortcut(nn.Module):
    """A block whose residual branch was removed (Sparse Structure Selection): x, or its 1x1 projection
    `downsample` where the shape changes (pre-activation blocks add no ReLU after the sum)."""

    def __init__(self, in_channels: int, planes: int, stride: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.downsample: nn.Sequential | None = None
        if stride != 1 or in_channels != planes * EXPANSION:
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, planes * EXPANSION, 1, stride=stride, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.downsample is None else self.downsample(x)


def default_cfg(depth: int) -> list[int]:
    """The seed's unpruned cfg: per block (selected inputs, conv1 out, conv2 out), then the final selection."""
    n = blocks_per_stage(depth)
    cfg = [16, 16, 16] + [64, 16, 16] * (n - 1)
    cfg += [64, 32, 32] + [128, 32, 32] * (n - 1)
    cfg += [128, 64, 64] + [256, 64, 64] * (n - 1)
    return cfg + [256]


def blocks_per_stage(depth: Any) -> int:
    if not isinstance(depth, int) or depth < 11 or (depth - 2) % 9:
        raise BadValueError(f"preresnet: depth must be 9n+2 (110, 164, ...), got {depth!r}")
    return (depth - 2) // 9


def describe_selections(kept: list[list[int]]) -> list[list[int] | None] | None:
    """Canonical "select": None per layer that keeps a prefix, and None overall if every layer does."""
    specs = [None if k == list(range(len(k))) else k for k in kept]
    return None if all(s is None for s in specs) else specs


@register_family
class PreResNet(ArchModel):
    """PreResNet-(9n+2) from the seed's `cifar/network-slimming/models/preresnet.py` (same state_dict keys).

    Stem `conv1` (3x3 -> 16); `layer1`..`layer3` (Sequentials of `PreActBottleneck`, planes 16/32/64, outputs
    64/128/256); final `bn`, `select`, ReLU, global average pool, `fc`. Config: `cfg` is flat, three numbers per
    block (channels selected from the block input, conv1 width, conv2 width) and one last number (channels
    selected before `fc`; a block's three numbers 0, 0, 0 mark a removed residual branch, SSS: only its
    shortcut is left); `select` gives which channels each of the 3n+1 `ChannelSelection` layers keeps (None =
    the first cfg-many, the unpruned case); `bn_weight_init` is the BN scale at initialisation (0.5 for Network
    Slimming, 1.0 in the seed's weight-level models).

    >>> from prunectl.models import create_model
    >>> m = create_model("preresnet164")
    >>> len(m.layer1), m.fc.in_features, m.to_arch().config["cfg"][:6]
    (18, 256, [16, 16, 16, 64, 16, 16])
    """

    family = "preresnet"

    def __init__(self, arch: Arch) -> None:
        super().__init__(arch)
        depth = arch.config["depth"]
        n = blocks_per_stage(depth)
        cfg = list(arch.config.get("cfg") or default_cfg(depth))
        removed = {i for i in range(len(cfg) // 3) if cfg[3 * i:3 * i + 3] == [0, 0, 0]
                   and not any(isinstance(v, bool) for v in cfg[3 * i:3 * i + 3])}
        cfg = [0 if i // 3 in removed and i < 3 * n * 3 else as_width(v, f"preresnet cfg[{i}]")
               for i, v in enumerate(cfg)]
        if len(cfg) != 9 * n + 1:
            raise BadValueError(f"preresnet: cfg for depth {depth} needs {9 * n + 1} entries, got {len(cfg)}")
        select = arch.config.get("select") or [None] * (3 * n + 1)
        if len(select) != 3 * n + 1:
            raise BadValueError(f"preresnet: select needs {3 * n + 1} entries (one per selection layer), got "
                                f"{len(select)}")
        check_spatial(arch.input_size, 2, self.family)
        self.depth = depth
        self.bn_weight_init = float(arch.config.get("bn_weight_init", 0.5))
        self.conv1 = nn.Conv2d(arch.input_size[0], 16, 3, padding=1, bias=False)
        in_ch, stages = 16, []
        for s, (planes, stride) in enumerate(zip(STAGE_PLANES, STAGE_STRIDES, strict=True)):
            blocks: list[nn.Module] = []
            for b in range(n):
                i = s * n + b
                if i in removed:
                    blocks.append(PreActShortcut(in_ch, planes, stride if b == 0 else 1))
                    in_ch = planes * EXPANSION
                    continue
                keep = resolve_select(select[i], in_ch, cfg[3 * i], f"preresnet select[{i}]")
                blocks.append(PreActBottleneck(in_ch, cfg[3 * i:3 * i + 3], keep, planes, stride if b == 0 else 1))
                in_ch = planes * EXPANSION
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.bn = nn.BatchNorm2d(in_ch)
        self.select = ChannelSelection(in_ch, resolve_select(select[-1], in_ch, cfg[-1], "preresnet select[-1]"))
        self.relu = nn.ReLU()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cfg[-1], arch.num_classes)
        self.reset_parameters()

    @property
    def blocks(self) -> list[PreActBottleneck | PreActShortcut]:
        """All blocks of `layer1`..`layer3`, in order (one selection layer each, unless the branch is removed)."""
        return [cast(PreActBottleneck | PreActShortcut, b) for stage in (self.layer1, self.layer2, self.layer3)
                for b in stage]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        x = self.relu(self.select(self.bn(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))

    def reset_parameters(self) -> None:
        # Seed: conv normal(0, sqrt(2 / (k*k*out))), BN scale 0.5 (slimming) or 1 (weight-level), Linear default.
        seed_init(self, self.bn_weight_init)

    def to_arch(self) -> Arch:
        cfg: list[int] = []
        kept: list[list[int]] = []
        for block in self.blocks:
            if isinstance(block, PreActShortcut):
                cfg += [0, 0, 0]
                kept.append([])
                continue
            cfg += [block.conv1.in_channels, block.conv1.out_channels, block.conv2.out_channels]
            kept.append(block.select.kept())
        cfg.append(self.fc.in_features)
        kept.append(self.select.kept())
        config = {"depth": self.depth, "cfg": cfg, "select": describe_selections(kept),
                  "bn_weight_init": self.bn_weight_init}
        return Arch(self.family, config, self.num_classes, self.input_size, name=self.arch_name)


def preresnet_arch(depth: int, num_classes: int = 10, input_size: tuple[int, int, int] = (3, 32, 32),
                   bn_weight_init: float = 0.5, name: str | None = None) -> Arch:
    config = {"depth": depth, "cfg": default_cfg(depth), "select": None, "bn_weight_init": bn_weight_init}
    return Arch(PreResNet.family, config, num_classes, input_size, name=name)


@register_model("preresnet164")
def preresnet164(num_classes: int = 10, input_size: tuple[int, int, int] = (3, 32, 32),
                 bn_weight_init: float = 0.5) -> Arch:
    """PreResNet-164 (18 bottlenecks per stage) as Network Slimming prunes it: BN scales start at 0.5."""
    return preresnet_arch(164, num_classes, input_size, bn_weight_init, name="preresnet164")


@register_model("preresnet110")
def preresnet110(num_classes: int = 10, input_size: tuple[int, int, int] = (3, 32, 32),
                 bn_weight_init: float = 1.0) -> Arch:
    """PreResNet-110 of the seed's weight-level experiments: bottlenecks, 12 per stage (110 = 9*12 + 2), BN 1.

    The seed's `cifar/weight-level/models/cifar/preresnet.py` uses bottlenecks for depth >= 44 with
    n = (depth - 2) // 9, so its "PreResNet-110" is this network, not a 6n+2 basic-block one.
    """
    return preresnet_arch(110, num_classes, input_size, bn_weight_init, name="preresnet110")
