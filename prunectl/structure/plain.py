"""Structure of the plain conv stacks: CIFAR and ImageNet VGGs and LeNet-5 (every conv a prunable group)."""

from __future__ import annotations

from typing import Any

from torch import nn

from prunectl.models import Arch
from prunectl.structure.groups import ChannelGroup, Consumer
from prunectl.structure.provider import StructureProvider, register_provider

CHANNELS = frozenset({"channel-groups"})
BN_CHANNELS = frozenset({"channel-groups", "bn-scaled-channel-groups"})


@register_provider
class CifarVGGStructure(StructureProvider):
    """Every conv of `features` is a group (with the BN after it), read by the next conv or the head's first
    Linear. `meta["conv_id"]` numbers the convs from 1."""

    family = "cifar_vgg"
    offers = BN_CHANNELS

    def head(self, model: Any) -> Consumer:
        return Consumer("classifier" if model.head == "linear" else "classifier.0")

    def channel_groups(self, model: Any) -> list[ChannelGroup]:
        convs = [(i, m) for i, m in enumerate(model.features) if isinstance(m, nn.Conv2d)]
        out = []
        for layer, (i, conv) in enumerate(convs, start=1):
            has_bn = i + 1 < len(model.features) and isinstance(model.features[i + 1], nn.BatchNorm2d)
            reader = Consumer(f"features.{convs[layer][0]}") if layer < len(convs) else self.head(model)
            out.append(ChannelGroup(f"features.{i}", conv.out_channels, (f"features.{i}",),
                                    (f"features.{i + 1}",) if has_bn else (), (reader,), meta={"conv_id": layer}))
        return out

    def examples(self) -> dict[str, Arch]:
        return {"linear": Arch(self.family, {"cfg": [8, "M", 12, 10], "head": "linear"}, 5, (3, 8, 8)),
                "l1": Arch(self.family, {"cfg": [8, "M", 12, 10], "head": "l1"}, 5, (3, 8, 8))}


@register_provider
class ImageNetVGGStructure(CifarVGGStructure):
    """As the CIFAR VGG; the "fc4096" head reads a flattened 7x7 map, so each channel feeds 49 inputs."""

    family = "imagenet_vgg"

    def head(self, model: Any) -> Consumer:
        return Consumer("classifier") if model.head == "gap" else Consumer("classifier.0", positions=49)

    def examples(self) -> dict[str, Arch]:
        return {"bn_gap": Arch(self.family, {"cfg": [8, "M", 8, "M", 6, "M", 6, "M", 8, "M"], "batch_norm": True,
                                             "head": "gap"}, 5, (3, 32, 32)),
                "fc4096": Arch(self.family, {"cfg": [4, "M", 6, "M"], "batch_norm": False, "head": "fc4096"}, 5,
                               (3, 8, 8))}


@register_provider
class LeNetStructure(StructureProvider):
    """conv1 and conv2 (no BN; the bias goes with the filter); fc1 reads conv2's flattened map."""

    family = "lenet"
    offers = CHANNELS

    def channel_groups(self, model: Any) -> list[ChannelGroup]:
        conv1, conv2 = model.features.conv1, model.features.conv2
        positions = model.classifier.fc1.in_features // conv2.out_channels
        return [
            ChannelGroup("features.conv1", conv1.out_channels, ("features.conv1",), (),
                         (Consumer("features.conv2"),), meta={"conv_id": 1}),
            ChannelGroup("features.conv2", conv2.out_channels, ("features.conv2",), (),
                         (Consumer("classifier.fc1", positions=positions),), meta={"conv_id": 2}),
        ]

    def examples(self) -> dict[str, Arch]:
        return {"lenet5": Arch(self.family, {"conv_widths": [6, 8], "fc_widths": [12, 10]}, 5, (1, 16, 16))}
