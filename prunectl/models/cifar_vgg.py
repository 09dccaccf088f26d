"""CIFAR VGG (Network Slimming / L1-norm style): conv-BN-ReLU stacks, global average pool, a small head."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from prunectl.errors import BadValueError
from prunectl.models.base import Arch, ArchModel, register_family, register_model
from prunectl.models.layers import as_width, check_spatial, count_pools, init_bn, init_conv_fan_out

VGG_CFGS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512],
}
HEADS = ("linear", "l1")
L1_HEAD_WIDTH = 512


def check_cfg(cfg: Sequence[Any], family: str) -> list[int | str]:
    """Validate a VGG cfg: positive ints and "M", at least one conv."""
    out: list[int | str] = []
    for i, v in enumerate(cfg):
        out.append("M" if v == "M" else as_width(v, f"{family} cfg[{i}]"))
    if not any(v != "M" for v in out):
        raise BadValueError(f"{family}: cfg has no convolution")
    return out


def last_width(cfg: Sequence[int | str]) -> int:
    """The width of the last convolution of a cfg."""
    return int([v for v in cfg if v != "M"][-1])


def cfg_from_features(features: nn.Sequential) -> list[int | str]:
    """Read a cfg back from a `features` Sequential (conv widths and "M" for each max-pool)."""
    cfg: list[int | str] = []
    for m in features:
        if isinstance(m, nn.Conv2d):
            cfg.append(m.out_channels)
        elif isinstance(m, nn.MaxPool2d):
            cfg.append("M")
    return cfg


def make_features(cfg: Sequence[int | str], in_channels: int, conv_bias: bool, batch_norm: bool = True,
                  inplace: bool = False) -> nn.Sequential:
    """conv3x3(pad 1)[-BN]-ReLU per width, MaxPool2d(2) per "M"; numbered like torchvision's `make_layers`."""
    layers: list[nn.Module] = []
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        assert isinstance(v, int)
        layers.append(nn.Conv2d(in_channels, v, kernel_size=3, padding=1, bias=conv_bias))
        if batch_norm:
            layers.append(nn.BatchNorm2d(v))
        layers.append(nn.ReLU(inplace=inplace))
        in_channels = v
    return nn.Sequential(*layers)


@register_family
class CifarVGG(ArchModel):
    """VGG for small images, as in the seed's `cifar/network-slimming` and `cifar/l1-norm-pruning` models.

    `features` is a plain Sequential of Conv2d(3x3, no bias), BatchNorm2d, ReLU and MaxPool2d(2) (numbered like
    torchvision); then `pool` (global average) and `classifier`: a single Linear for head "linear" (Network
    Slimming), or Linear(c, 512)-BatchNorm1d-ReLU-Linear(512, n) for head "l1" (the L1-norm paper).
    Global pooling replaces the seed's AvgPool2d(2) (identical at 32x32) so any input of at least
    2**pools pixels works, e.g. MNIST.

    >>> from prunectl.models import Arch, build_model
    >>> m = build_model(Arch("cifar_vgg", {"cfg": [32, "M", 64], "head": "linear"}, 10, (1, 28, 28)))
    >>> m(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    """

    family = "cifar_vgg"

    def __init__(self, arch: Arch) -> None:
        super().__init__(arch)
        cfg = check_cfg(arch.config["cfg"], self.family)
        head = arch.config.get("head", "linear")
        if head not in HEADS:
            raise BadValueError(f"{self.family}: head must be one of {HEADS}, got {head!r}")
        check_spatial(arch.input_size, count_pools(cfg), self.family)
        self.head = head
        self.features = make_features(cfg, arch.input_size[0], conv_bias=False)
        self.pool = nn.AdaptiveAvgPool2d(1)
        width = last_width(cfg)
        self.classifier: nn.Module
        if head == "linear":
            self.classifier = nn.Linear(width, arch.num_classes)
        else:
            self.classifier = nn.Sequential(
                nn.Linear(width, L1_HEAD_WIDTH),
                nn.BatchNorm1d(L1_HEAD_WIDTH),
                nn.ReLU(),
                nn.Linear(L1_HEAD_WIDTH, arch.num_classes),
            )
        self.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x))
        return self.classifier(torch.flatten(x, 1))

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                init_conv_fan_out(m)
            elif isinstance(m, nn.BatchNorm2d):
                init_bn(m, 0.5)
            elif isinstance(m, nn.BatchNorm1d):  # the seed leaves the "l1" head's BN at torch's default
                init_bn(m, 1.0)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def to_arch(self) -> Arch:
        return Arch(
            self.family,
            {"cfg": cfg_from_features(self.features), "head": self.head},
            self.num_classes,
            self.input_size,
            name=self.arch_name,
        )


def cifar_vgg_arch(cfg: Sequence[int | str], name: str, num_classes: int, input_size: tuple[int, int, int],
                   head: str = "linear") -> Arch:
    return Arch(CifarVGG.family, {"cfg": list(cfg), "head": head}, num_classes, input_size, name=name)


def _register(name: str) -> None:
    def factory(num_classes: int = 10, input_size: tuple[int, int, int] = (3, 32, 32), head: str = "linear",
                cfg: Sequence[int | str] | None = None) -> Arch:
        return cifar_vgg_arch(VGG_CFGS[name] if cfg is None else cfg, name, num_classes, input_size, head)

    factory.__name__ = name
    factory.__doc__ = f"CIFAR {name.upper()} (no final max-pool, as in the seed); `head` is 'linear' or 'l1'."
    register_model(name)(factory)


for _name in VGG_CFGS:
    _register(_name)
