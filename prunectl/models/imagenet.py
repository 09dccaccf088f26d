"""ImageNet ResNets and VGGs on torchvision's definitions, with explicit (prunable) per-layer widths."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import torch
from torch import nn
from torchvision.models import resnet as tv_resnet

from prunectl.errors import BadValueError
from prunectl.models.base import Arch, ArchModel, register_family, register_model
from prunectl.models.cifar_vgg import cfg_from_features, check_cfg, last_width, make_features
from prunectl.models.layers import (
    ChannelSelection,
    as_width,
    check_spatial,
    count_pools,
    describe_select,
    init_bn,
    resolve_select,
)

IMAGENET_SIZE = (3, 224, 224)
EXPANSION = {"basic": 1, "bottleneck": 4}
STAGE_STRIDES = (1, 2, 2, 2)


class BasicBlock(tv_resnet.BasicBlock):
    """torchvision's BasicBlock with a free first-conv width and an optional selection of its input channels."""

    def __init__(self, in_ch: int, mid: Sequence[int], planes: int, stride: int,
                 downsample: nn.Module | None, keep: list[int] | None) -> None:
        nn.Module.__init__(self)
        self.select = nn.Identity() if keep is None else ChannelSelection(in_ch, keep)
        self.conv1 = tv_resnet.conv3x3(in_ch if keep is None else len(keep), mid[0], stride)
        self.bn1 = nn.BatchNorm2d(mid[0])
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = tv_resnet.conv3x3(mid[0], planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample, self.stride = downsample, stride

    @property
    def mid(self) -> list[int]:
        return [self.conv1.out_channels]

    @property
    def out_channels(self) -> int:
        return self.conv2.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(self.select(x))))
        out = self.bn2(self.conv2(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(tv_resnet.Bottleneck):
    """torchvision's Bottleneck with free conv1/conv2 widths and an optional selection of its input channels."""

    def __init__(self, in_ch: int, mid: Sequence[int], planes: int, stride: int,
                 downsample: nn.Module | None, keep: list[int] | None) -> None:
        nn.Module.__init__(self)
        self.select = nn.Identity() if keep is None else ChannelSelection(in_ch, keep)
        self.conv1 = tv_resnet.conv1x1(in_ch if keep is None else len(keep), mid[0])
        self.bn1 = nn.BatchNorm2d(mid[0])
        self.conv2 = tv_resnet.conv3x3(mid[0], mid[1], stride)
        self.bn2 = nn.BatchNorm2d(mid[1])
        self.conv3 = tv_resnet.conv1x1(mid[1], planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample, self.stride = downsample, stride

    @property
    def mid(self) -> list[int]:
        return [self.conv1.out_channels, self.conv2.out_channels]

    @property
    def out_channels(self) -> int:
        return self.conv3.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(self.select(x))))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class ShortcutBlock(nn.Module):
    """A block whose residual branch was removed (Sparse Structure Selection): ReLU(shortcut(x))."""

    def __init__(self, in_ch: int, out_ch: int, downsample: nn.Module | None) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_ch, out_ch
        self.downsample = downsample
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(x if self.downsample is None else self.downsample(x))


def make_block(kind: str, spec: Any, in_ch: int, planes: int, stride: int, where: str) -> nn.Module:
    """One block from its config entry: {"mid": [...], "in_select": ...} or {"branch": false}."""
    if not isinstance(spec, dict) or set(spec) - {"mid", "branch", "in_select"}:
        raise BadValueError(f"{where}: a block is a dict with keys mid, branch, in_select; got {spec!r}")
    out_ch = planes * EXPANSION[kind]
    downsample = None
    if stride != 1 or in_ch != out_ch:
        downsample = nn.Sequential(tv_resnet.conv1x1(in_ch, out_ch, stride), nn.BatchNorm2d(out_ch))
    if spec.get("branch", True) is False:
        return ShortcutBlock(in_ch, out_ch, downsample)
    mid = spec.get("mid")
    need = 1 if kind == "basic" else 2
    if not isinstance(mid, list) or len(mid) != need:
        raise BadValueError(f"{where}: a {kind} block needs mid = [{need} width(s)], got {mid!r}")
    mid = [as_width(w, f"{where} mid") for w in mid]
    keep = None
    if spec.get("in_select") is not None:
        keep = resolve_select(spec["in_select"], in_ch, where=f"{where} in_select")
        keep = None if len(keep) == in_ch else keep
    block_cls = BasicBlock if kind == "basic" else Bottleneck
    return block_cls(in_ch, mid, planes, stride, downsample, keep)


def describe_block(block: nn.Module) -> dict[str, Any]:
    if isinstance(block, ShortcutBlock):
        return {"branch": False}
    assert isinstance(block, BasicBlock | Bottleneck)
    spec: dict[str, Any] = {"mid": block.mid}
    if isinstance(block.select, ChannelSelection):
        select = describe_select(block.select.kept(), block.select.num_channels)
        if select is not None:
            spec["in_select"] = select
    return spec


@register_family
class ImageNetResNet(ArchModel):
    """torchvision's ResNet layout (same module names, so torchvision state_dicts load into unpruned models).

    Stem `conv1` 7x7/2, `bn1`, `relu`, `maxpool`; `layer1`..`layer4` (Sequentials of blocks, strides 1/2/2/2);
    `avgpool`, `fc`. Config: `block` "basic" or "bottleneck", `stem_width`, `stage_widths` (block outputs /
    expansion) and `blocks`, per stage a list of per-block dicts: `mid` (inner widths: [conv1] for basic,
    [conv1, conv2] for bottleneck), optional `in_select` (count or indices of the block input channels its branch
    reads; ResNet-50-2x) and optional `branch: false` (the residual branch is gone, the block is its shortcut; SSS).

    >>> from prunectl.models import default_arch, build_model
    >>> a = default_arch("resnet50")
    >>> a.config["blocks"][0][0]
    {'mid': [64, 64]}
    >>> build_model(a)(torch.zeros(1, 3, 64, 64)).shape
    torch.Size([1, 10])
    """

    family = "imagenet_resnet"

    def __init__(self, arch: Arch) -> None:
        super().__init__(arch)
        cfg = arch.config
        kind = cfg.get("block")
        if kind not in EXPANSION:
            raise BadValueError(f"imagenet_resnet: block must be 'basic' or 'bottleneck', got {kind!r}")
        stage_widths = [as_width(w, "imagenet_resnet stage_widths") for w in cfg.get("stage_widths", ())]
        blocks = cfg.get("blocks")
        if len(stage_widths) != 4 or not isinstance(blocks, list) or len(blocks) != 4 or not all(blocks):
            raise BadValueError("imagenet_resnet: stage_widths and blocks need 4 (non-empty) stages")
        check_spatial(arch.input_size, 5, self.family)
        self.block_kind = kind
        stem = as_width(cfg.get("stem_width", 64), "imagenet_resnet stem_width")
        self.conv1 = nn.Conv2d(arch.input_size[0], stem, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_ch, stages = stem, []
        for s, (planes, stride, specs) in enumerate(zip(stage_widths, STAGE_STRIDES, blocks, strict=True)):
            layers = []
            for b, spec in enumerate(specs):
                where = f"imagenet_resnet blocks[{s}][{b}]"
                layers.append(make_block(kind, spec, in_ch, planes, stride if b == 0 else 1, where))
                in_ch = planes * EXPANSION[kind]
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(in_ch, arch.num_classes)
        self.reset_parameters()

    @property
    def stages(self) -> list[nn.Sequential]:
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))

    def reset_parameters(self) -> None:
        # torchvision's ResNet init: conv kaiming normal (fan_out, relu), BN 1/0, Linear torch's default.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                init_bn(m, 1.0)
            elif isinstance(m, nn.Linear):
                m.reset_parameters()

    def to_arch(self) -> Arch:
        expansion = EXPANSION[self.block_kind]
        config = {
            "block": self.block_kind,
            "stem_width": self.conv1.out_channels,
            "stage_widths": [cast(int, stage[0].out_channels) // expansion for stage in self.stages],
            "blocks": [[describe_block(block) for block in stage] for stage in self.stages],
        }
        return Arch(self.family, config, self.num_classes, self.input_size, name=self.arch_name)


VGG_HEADS = ("fc4096", "gap")
IMAGENET_VGG_CFGS: dict[str, list[int | str]] = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}


def big_linear(in_features: int, out_features: int) -> nn.Linear:
    """A Linear left uninitialised (reset_parameters draws it): skips torch's own ~1 s init of 100M weights."""
    return nn.utils.skip_init(nn.Linear, in_features, out_features, device=torch.get_default_device())


@register_family
class ImageNetVGG(ArchModel):
    """torchvision's VGG layout (`features`, `avgpool`, `classifier`) with explicit conv widths.

    `features` is numbered exactly like torchvision's `make_layers` (conv with bias, optional BN, ReLU, "M"
    max-pools), so torchvision state_dicts load into unpruned models. Head "fc4096": adaptive 7x7 average pool and
    torchvision's Linear(c*49, 4096)-ReLU-Dropout-Linear(4096, 4096)-ReLU-Dropout-Linear(4096, n); head "gap":
    global average pool and a single Linear(c, n) (ThiNet-GAP and -Tiny).

    >>> from prunectl.models import Arch, build_model
    >>> m = build_model(Arch("imagenet_vgg", {"cfg": [16, "M", 32, "M"], "batch_norm": True, "head": "gap"},
    ...                      10, (3, 64, 64)))
    >>> m(torch.zeros(2, 3, 64, 64)).shape
    torch.Size([2, 10])
    """

    family = "imagenet_vgg"

    def __init__(self, arch: Arch) -> None:
        super().__init__(arch)
        cfg = check_cfg(arch.config["cfg"], self.family)
        head, batch_norm = arch.config.get("head", "fc4096"), arch.config.get("batch_norm", False)
        if head not in VGG_HEADS or not isinstance(batch_norm, bool):
            raise BadValueError(f"imagenet_vgg: head must be one of {VGG_HEADS} and batch_norm a bool, "
                                f"got {head!r}, {batch_norm!r}")
        check_spatial(arch.input_size, count_pools(cfg), self.family)
        self.head, self.batch_norm = head, batch_norm
        self.features = make_features(cfg, arch.input_size[0], conv_bias=True, batch_norm=batch_norm, inplace=True)
        width = last_width(cfg)
        self.classifier: nn.Module
        if head == "fc4096":
            self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
            self.classifier = nn.Sequential(
                big_linear(width * 7 * 7, 4096), nn.ReLU(True), nn.Dropout(p=0.5),
                big_linear(4096, 4096), nn.ReLU(True), nn.Dropout(p=0.5),
                nn.Linear(4096, arch.num_classes),
            )
        else:
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.classifier = nn.Linear(width, arch.num_classes)
        self.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))

    def reset_parameters(self) -> None:
        # torchvision's VGG init: conv kaiming normal (fan_out, relu) bias 0, BN 1/0, Linear normal(0, 0.01) bias 0.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                init_bn(m, 1.0)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def to_arch(self) -> Arch:
        config = {"cfg": cfg_from_features(self.features), "batch_norm": self.batch_norm, "head": self.head}
        return Arch(self.family, config, self.num_classes, self.input_size, name=self.arch_name)


def resnet_arch(name: str, kind: str, depths: Sequence[int], num_classes: int,
                input_size: tuple[int, int, int]) -> Arch:
    widths = [64, 128, 256, 512]
    need = 1 if kind == "basic" else 2
    blocks = [[{"mid": [w] * need} for _ in range(n)] for w, n in zip(widths, depths, strict=True)]
    config = {"block": kind, "stem_width": 64, "stage_widths": widths, "blocks": blocks}
    return Arch(ImageNetResNet.family, config, num_classes, input_size, name=name)


def _register_resnet(name: str, kind: str, depths: Sequence[int]) -> None:
    def factory(num_classes: int = 1000, input_size: tuple[int, int, int] = IMAGENET_SIZE) -> Arch:
        return resnet_arch(name, kind, depths, num_classes, input_size)

    factory.__name__ = name
    factory.__doc__ = f"ImageNet {name} ({kind} blocks, {list(depths)} per stage), torchvision's layout."
    register_model(name)(factory)


def _register_vgg(name: str, cfg_key: str, batch_norm: bool) -> None:
    def factory(num_classes: int = 1000, input_size: tuple[int, int, int] = IMAGENET_SIZE, head: str = "fc4096",
                cfg: Sequence[int | str] | None = None) -> Arch:
        config = {"cfg": list(IMAGENET_VGG_CFGS[cfg_key] if cfg is None else cfg), "batch_norm": batch_norm,
                  "head": head}
        return Arch(ImageNetVGG.family, config, num_classes, input_size, name=name)

    factory.__name__ = name
    factory.__doc__ = f"ImageNet VGG (cfg {cfg_key}, batch_norm={batch_norm}); head 'fc4096' or 'gap'."
    register_model(name)(factory)


_register_resnet("resnet18", "basic", (2, 2, 2, 2))
_register_resnet("resnet34", "basic", (3, 4, 6, 3))
_register_resnet("resnet50", "bottleneck", (3, 4, 6, 3))
_register_vgg("vgg11_bn", "A", True)
_register_vgg("vgg16_bn", "D", True)
# "vgg16" is the CIFAR VGG-16; the original (no BN) ImageNet VGG-16 of ThiNet and CP gets a suffix.
_register_vgg("vgg16_imagenet", "D", False)
