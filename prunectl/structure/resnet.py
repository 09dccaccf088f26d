"""Structure of the post-activation ResNets: CIFAR ResNet (option-A shortcuts) and ImageNet ResNet."""

from __future__ import annotations

from typing import Any, cast

from torch import nn

from prunectl.models import Arch
from prunectl.models.cifar_resnet import CifarBasicBlock, CifarShortcutBlock, ShortcutA
from prunectl.models.imagenet import BasicBlock, Bottleneck, ShortcutBlock
from prunectl.models.layers import ChannelSelection
from prunectl.structure.groups import BlockGroup, ChannelGroup, Consumer
from prunectl.structure.provider import StructureProvider, register_provider
from prunectl.structure.residual import ResidualStreams, in_order

RESNET = frozenset({"channel-groups", "removable-blocks"})


@register_provider
class CifarResNetStructure(StructureProvider):
    """Each basic block's conv1 is prunable; conv2's outputs are summed into the residual stream, which the
    zero-padding (option A) shortcuts carry from stage to stage, so the stem and every conv2 are tied.

    `meta["conv_id"]` counts the 3x3 convs from 1 at the stem, so block k (1-based over the net, removed blocks
    included) has its first conv at 2k, as in the seed's res56prune.py / res110prune.py. Every block with a
    branch is removable; the first block of stages 2 and 3 keeps its parameter-free downsampling shortcut.
    """

    family = "cifar_resnet"
    offers = RESNET

    def channel_groups(self, model: Any) -> list[ChannelGroup]:
        streams = ResidualStreams()
        items: list[ChannelGroup | str] = [
            streams.write("conv1", model.conv1.out_channels, ("conv1",), ("bn1",), {"conv_id": 1})]
        k = 0
        for s, stage in enumerate(model.stages):
            for b, block in enumerate(stage):
                k += 1
                p = f"layer{s + 1}.{b}"
                if isinstance(block, CifarBasicBlock):
                    streams.read(Consumer(f"{p}.conv1"))
                if isinstance(block.shortcut, ShortcutA):
                    streams.read(Consumer(f"{p}.shortcut"))
                    streams.start()
                if isinstance(block, CifarBasicBlock):
                    items.append(ChannelGroup(f"{p}.conv1", block.conv1.out_channels, (f"{p}.conv1",),
                                              (f"{p}.bn1",), (Consumer(f"{p}.conv2"),),
                                              meta={"stage": s, "block": k, "conv_id": 2 * k}))
                    items.append(streams.write(f"{p}.conv2", block.conv2.out_channels, (f"{p}.conv2",),
                                               (f"{p}.bn2",), {"stage": s, "block": k, "conv_id": 2 * k + 1}))
        streams.read(Consumer("fc"))
        return in_order(items, streams.resolve(across=True))

    def block_groups(self, model: Any) -> list[BlockGroup]:
        out, k = [], 0
        for s, stage in enumerate(model.stages):
            for b, block in enumerate(stage):
                k += 1
                p = f"layer{s + 1}.{b}"
                if isinstance(block, CifarBasicBlock):
                    shortcut = f"{p}.shortcut" if isinstance(block.shortcut, ShortcutA) else None
                    out.append(BlockGroup(p, s, b, b == 0, shortcut, f"{p}.bn2", (f"{p}.conv1", f"{p}.conv2"),
                                          meta={"block": k}))
        return out

    def remove_block(self, model: Any, block: BlockGroup) -> None:
        stage = cast(nn.Sequential, model.get_submodule(f"layer{block.stage + 1}"))
        old = cast(CifarBasicBlock, stage[block.index])
        stride = old.conv1.stride[0]
        stage[block.index] = CifarShortcutBlock(old.conv1.in_channels, old.out_channels, stride, model.shortcut_mode)

    def examples(self) -> dict[str, Arch]:
        return {"resnet14": Arch(self.family, {"depth": 14, "shortcut": "subsample"}, 5, (3, 8, 8)),
                "removed": Arch(self.family, {"depth": 14, "mid_widths": [[4, 0], [0, 6], [8, 8]]}, 5, (3, 8, 8))}


@register_provider
class ImageNetResNetStructure(StructureProvider):
    """Basic blocks: conv1 is prunable; bottlenecks: conv1 and conv2. A block's last conv and its projection
    (`downsample`, a group of its own) write into the residual stream of their stage and are tied; the stem's
    output is read by the first block (through its input selection, `in_select`, where it has one).

    Blocks count from 1 over the net (removed-branch blocks included); for basic blocks `meta["conv_id"]` is the
    seed's id (stem 1, block k's first conv 2k, 1x1 downsample convs not counted), as in
    imagenet/l1-norm-pruning. Every block with a branch is removable; a first block of a stage keeps its
    projection shortcut (a `ShortcutBlock`).
    """

    family = "imagenet_resnet"
    offers = RESNET

    def channel_groups(self, model: Any) -> list[ChannelGroup]:
        streams = ResidualStreams()
        items: list[ChannelGroup | str] = [
            streams.write("conv1", model.conv1.out_channels, ("conv1",), ("bn1",), {"conv_id": 1})]
        basic, k = model.block_kind == "basic", 0
        convs = 2 if basic else 3
        for s, stage in enumerate(model.stages):
            for b, block in enumerate(stage):
                k += 1
                p = f"layer{s + 1}.{b}"
                branch = not isinstance(block, ShortcutBlock)
                if branch:
                    select = block.select
                    selected = tuple(select.kept()) if isinstance(select, ChannelSelection) else None
                    streams.read(Consumer(f"{p}.conv1", selected=selected,
                                          selection=None if selected is None else f"{p}.select"))
                if block.downsample is not None:
                    streams.read(Consumer(f"{p}.downsample.0"))
                    streams.start()
                    items.append(streams.write(f"{p}.downsample", block.downsample[0].out_channels,
                                               (f"{p}.downsample.0",), (f"{p}.downsample.1",),
                                               {"stage": s, "block": k}))
                if not branch:
                    continue
                for j in range(1, convs + 1):
                    meta: dict[str, Any] = {"stage": s, "block": k, "position": j}
                    if basic:
                        meta["conv_id"] = 2 * k + j - 1
                    conv = cast(nn.Conv2d, block.get_submodule(f"conv{j}"))
                    name, norms = f"{p}.conv{j}", (f"{p}.bn{j}",)
                    if j < convs:
                        items.append(ChannelGroup(name, conv.out_channels, (name,), norms,
                                                  (Consumer(f"{p}.conv{j + 1}"),), meta=meta))
                    else:
                        items.append(streams.write(name, conv.out_channels, (name,), norms, meta))
        streams.read(Consumer("fc"))
        return in_order(items, streams.resolve())

    def block_groups(self, model: Any) -> list[BlockGroup]:
        out, k = [], 0
        convs = 2 if model.block_kind == "basic" else 3
        for s, stage in enumerate(model.stages):
            for b, block in enumerate(stage):
                k += 1
                p = f"layer{s + 1}.{b}"
                if not isinstance(block, ShortcutBlock):
                    shortcut = None if block.downsample is None else f"{p}.downsample"
                    groups = tuple(f"{p}.conv{j}" for j in range(1, convs + 1))
                    out.append(BlockGroup(p, s, b, b == 0, shortcut, f"{p}.bn{convs}", groups, meta={"block": k}))
        return out

    def remove_block(self, model: Any, block: BlockGroup) -> None:
        stage = cast(nn.Sequential, model.get_submodule(f"layer{block.stage + 1}"))
        old = cast(BasicBlock | Bottleneck, stage[block.index])
        select = old.select
        in_ch = select.num_channels if isinstance(select, ChannelSelection) else old.conv1.in_channels
        stage[block.index] = ShortcutBlock(in_ch, old.out_channels, old.downsample)

    def examples(self) -> dict[str, Arch]:
        basic = [[{"mid": [4]}, {"mid": [4]}], [{"mid": [8]}], [{"mid": [8]}], [{"mid": [8]}]]
        bottleneck = [[{"mid": [2, 2]}, {"mid": [3, 2], "in_select": [0, 2, 3, 5, 7]}],
                      [{"mid": [4, 4]}, {"branch": False}], [{"mid": [4, 4]}], [{"mid": [4, 4]}]]
        return {"basic": Arch(self.family, {"block": "basic", "stem_width": 8, "stage_widths": [4, 8, 8, 8],
                                            "blocks": basic}, 5, (3, 32, 32)),
                "bottleneck": Arch(self.family, {"block": "bottleneck", "stem_width": 8, "stage_widths": [2, 4, 4, 4],
                                                 "blocks": bottleneck}, 5, (3, 32, 32))}
