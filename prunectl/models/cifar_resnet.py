"""CIFAR ResNet with basic blocks and parameter-free (option-A) shortcuts, as pruned by L1-norm and SFP."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from prunectl.errors import BadValueError
from prunectl.models.base import Arch, ArchModel, register_family, register_model
from prunectl.models.layers import as_width, check_spatial, seed_init

SHORTCUTS = ("avgpool", "subsample")
STAGE_STRIDES = (1, 2, 2)


class ShortcutA(nn.Module):
    """Parameter-free shortcut: halve the resolution (2x2 average, or take every other pixel), zero-pad channels.

    "avgpool" is the seed's L1-norm ResNet (`downsample_basic_block`); "subsample" is x[:, :, ::2, ::2], the
    original option A (He et al. 2016) and SFP's `DownsampleA`.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, mode: str) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.stride, self.mode = in_channels, out_channels, stride, mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != 1:
            if self.mode == "avgpool":
                x = F.avg_pool2d(x, self.stride, self.stride, ceil_mode=True)
            else:
                x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.out_channels - self.in_channels))

    def extra_repr(self) -> str:
        return f"{self.in_channels} -> {self.out_channels}, stride={self.stride}, mode={self.mode}"


class CifarBasicBlock(nn.Module):
    """conv1 (in -> mid, stride) BN ReLU, conv2 (mid -> out) BN, plus the shortcut, ReLU."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, stride: int, shortcut: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, mid_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid_channels)
        self.conv2 = nn.Conv2d(mid_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = ShortcutA(in_channels, out_channels, stride, shortcut)

    @property
    def mid(self) -> int:
        return self.conv1.out_channels

    @property
    def out_channels(self) -> int:
        return self.conv2.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class CifarShortcutBlock(nn.Module):
    """A block whose residual branch was removed (Sparse Structure Selection): ReLU(shortcut(x)), the
    parameter-free shortcut of the block it replaces (identity, or option A where the shape changes)."""

    mid = 0

    def __init__(self, in_channels: int, out_channels: int, stride: int, shortcut: str) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.relu = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = ShortcutA(in_channels, out_channels, stride, shortcut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.shortcut(x))


def make_block(in_channels: int, mid: int, out_channels: int, stride: int,
               shortcut: str) -> CifarBasicBlock | CifarShortcutBlock:
    """A basic block, or (mid 0) the shortcut left by a removed branch."""
    if mid == 0:
        return CifarShortcutBlock(in_channels, out_channels, stride, shortcut)
    return CifarBasicBlock(in_channels, mid, out_channels, stride, shortcut)


def parse_config(config: Any, family: str) -> tuple[int, list[int], list[list[int]], str]:
    """Check a cifar_resnet config and return (blocks per stage, stage widths, mid widths, shortcut)."""
    depth = config["depth"]
    if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        raise BadValueError(f"{family}: depth must be 6n+2 (20, 32, 56, 110, ...), got {depth!r}")
    n = (depth - 2) // 6
    widths = [as_width(w, f"{family} stage_widths[{i}]") for i, w in enumerate(config.get("stage_widths", [16, 32, 64]))]
    if len(widths) != 3 or widths != sorted(widths):
        raise BadValueError(f"{family}: stage_widths must be 3 non-decreasing widths (zero-padded shortcuts), "
                            f"got {widths}")
    mids = config.get("mid_widths")
    if mids is None:
        mids = [[w] * n for w in widths]
    if len(mids) != 3 or any(len(stage) != n for stage in mids):
        raise BadValueError(f"{family}: mid_widths must be 3 lists of {n} widths for depth {depth}")
    # A mid width of 0 is a block whose residual branch was removed (SSS): only its shortcut is left.
    mids = [[0 if w == 0 and not isinstance(w, bool) else as_width(w, f"{family} mid_widths[{s}][{b}]")
             for b, w in enumerate(st)] for s, st in enumerate(mids)]
    shortcut = config.get("shortcut", "avgpool")
    if shortcut not in SHORTCUTS:
        raise BadValueError(f"{family}: shortcut must be one of {SHORTCUTS}, got {shortcut!r}")
    return n, widths, mids, shortcut


@register_family
class CifarResNet(ArchModel):
    """ResNet-(6n+2) for CIFAR from the seed's `cifar/l1-norm-pruning/models/resnet.py`.

    Stem conv3x3 (in -> w1) BN ReLU; `layer1`..`layer3` (Sequentials of `CifarBasicBlock`, strides 1/2/2,
    outputs `stage_widths`); global average pool; `fc`. L1-norm pruning narrows each block's first conv, which
    is what `mid_widths` records (one width per block, per stage); a width of 0 marks a block whose residual
    branch was removed (Sparse Structure Selection), which is then ReLU(shortcut(x)).

    >>> from prunectl.models import create_model
    >>> m = create_model("resnet56")
    >>> m.layer1[0].conv1.out_channels, m.to_arch().config["mid_widths"][2][:2]
    (16, [64, 64])
    """

    family = "cifar_resnet"

    def __init__(self, arch: Arch) -> None:
        super().__init__(arch)
        n, widths, mids, shortcut = parse_config(arch.config, self.family)
        check_spatial(arch.input_size, 2, self.family)
        self.depth, self.shortcut_mode = arch.config["depth"], shortcut
        self.conv1 = nn.Conv2d(arch.input_size[0], widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        in_ch = widths[0]
        stages = []
        for width, stride, stage_mids in zip(widths, STAGE_STRIDES, mids, strict=True):
            blocks = []
            for b, mid in enumerate(stage_mids):
                blocks.append(make_block(in_ch, mid, width, stride if b == 0 else 1, shortcut))
                in_ch = width
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[-1], arch.num_classes)
        self.reset_parameters()

    @property
    def stages(self) -> list[list[CifarBasicBlock | CifarShortcutBlock]]:
        """The blocks of `layer1`..`layer3`."""
        return [[cast(CifarBasicBlock | CifarShortcutBlock, b) for b in stage]
                for stage in (self.layer1, self.layer2, self.layer3)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))

    def reset_parameters(self) -> None:
        # Seed: conv normal(0, sqrt(2 / (k*k*out))), BN 1/0; the Linear keeps torch's default init.
        seed_init(self, 1.0)

    def to_arch(self) -> Arch:
        config = {
            "depth": self.depth,
            "stage_widths": [stage[0].out_channels for stage in self.stages],
            "mid_widths": [[block.mid for block in stage] for stage in self.stages],
            "shortcut": self.shortcut_mode,
        }
        return Arch(self.family, config, self.num_classes, self.input_size, name=self.arch_name)


def cifar_resnet_arch(depth: int, num_classes: int = 10, input_size: tuple[int, int, int] = (3, 32, 32),
                      mid_widths: Sequence[Sequence[int]] | None = None, shortcut: str = "avgpool",
                      name: str | None = None, stage_widths: Sequence[int] = (16, 32, 64)) -> Arch:
    """The Arch of a CIFAR ResNet of `depth`, unpruned unless `mid_widths` is given; `stage_widths` other than
    the papers' 16/32/64 make a narrower or wider member (the quick recipes' small nets)."""
    n = (depth - 2) // 6
    widths = [int(w) for w in stage_widths]
    mids = [[w] * n for w in widths] if mid_widths is None else [list(s) for s in mid_widths]
    config = {"depth": depth, "stage_widths": widths, "mid_widths": mids, "shortcut": shortcut}
    return Arch(CifarResNet.family, config, num_classes, input_size, name=name)


def _register(depth: int) -> None:
    name = f"resnet{depth}"

    def factory(num_classes: int = 10, input_size: tuple[int, int, int] = (3, 32, 32), shortcut: str = "avgpool",
                mid_widths: Sequence[Sequence[int]] | None = None,
                stage_widths: Sequence[int] = (16, 32, 64)) -> Arch:
        return cifar_resnet_arch(depth, num_classes, input_size, mid_widths, shortcut, name=name,
                                 stage_widths=stage_widths)

    factory.__name__ = name
    factory.__doc__ = f"CIFAR ResNet-{depth}; shortcut 'avgpool' (L1-norm seed) or 'subsample' (SFP)."
    register_model(name)(factory)


# resnet8 (n = 1, one block per stage) is no paper's network: it is the small residual net of the quick
# recipes (quick-sfp, quick-sss) on mnist5k; pass input_size=(1, 28, 28) for it.
for _depth in (8, 20, 32, 56, 110):
    _register(_depth)
