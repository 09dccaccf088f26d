"""Structure of Network Slimming's families, whose shared BNs feed a `ChannelSelection`: PreResNet, DenseNet."""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import nn

from prunectl.models import Arch
from prunectl.models.layers import ChannelSelection
from prunectl.models.preresnet import EXPANSION, PreActBottleneck, PreActShortcut
from prunectl.structure.groups import BlockGroup, ChannelGroup, Consumer
from prunectl.structure.provider import StructureProvider, register_provider
from prunectl.structure.residual import ResidualStreams, in_order


def select_group(bn: str, select: str, selection: ChannelSelection, reader: str) -> ChannelGroup:
    """A BN on a shared tensor feeding `select` and then `reader`: prunable through the selection only."""
    kept = selection.kept()
    return ChannelGroup(bn, len(kept), (), (bn,), (Consumer(reader),), kind="select",
                        meta={"select": select, "selected": kept})


@register_provider
class PreResNetStructure(StructureProvider):
    """Each bottleneck: bn1 (on the block input) through its selection, conv1 (with bn2), conv2 (with bn3);
    conv3 and the projections (`downsample`) write into the residual stream (tied), whose readers are the next
    blocks' bn1 and projections and the final `bn`, itself pruned through `select` before `fc`. Every block with
    a branch is removable; a first block of a stage keeps its projection."""

    family = "preresnet"
    offers = frozenset({"channel-groups", "bn-scaled-channel-groups", "removable-blocks"})

    @staticmethod
    def blocks(model: Any) -> list[tuple[str, int, int, Any]]:
        stages = (model.layer1, model.layer2, model.layer3)
        return [(f"layer{s + 1}.{b}", s, b, block) for s, stage in enumerate(stages) for b, block in enumerate(stage)]

    def channel_groups(self, model: Any) -> list[ChannelGroup]:
        streams = ResidualStreams()
        items: list[ChannelGroup | str] = [streams.write("conv1", model.conv1.out_channels, ("conv1",), ())]
        for p, _, _, block in self.blocks(model):
            branch = isinstance(block, PreActBottleneck)
            if branch:
                streams.read(Consumer(f"{p}.bn1"))
            if block.downsample is not None:
                streams.read(Consumer(f"{p}.downsample.0"))
                streams.start()
                items.append(streams.write(f"{p}.downsample", block.downsample[0].out_channels,
                                           (f"{p}.downsample.0",), ()))
            if branch:
                items += [
                    select_group(f"{p}.bn1", f"{p}.select", block.select, f"{p}.conv1"),
                    ChannelGroup(f"{p}.conv1", block.conv1.out_channels, (f"{p}.conv1",), (f"{p}.bn2",),
                                 (Consumer(f"{p}.conv2"),)),
                    ChannelGroup(f"{p}.conv2", block.conv2.out_channels, (f"{p}.conv2",), (f"{p}.bn3",),
                                 (Consumer(f"{p}.conv3"),)),
                    streams.write(f"{p}.conv3", block.conv3.out_channels, (f"{p}.conv3",), ()),
                ]
        streams.read(Consumer("bn"))
        return [*in_order(items, streams.resolve()), select_group("bn", "select", model.select, "fc")]

    def block_groups(self, model: Any) -> list[BlockGroup]:
        return [BlockGroup(p, s, b, b == 0, None if block.downsample is None else f"{p}.downsample",
                           f"{p}.conv3", tuple(f"{p}.{g}" for g in ("bn1", "conv1", "conv2", "conv3")),
                           meta={"block": k})
                for k, (p, s, b, block) in enumerate(self.blocks(model), start=1)
                if isinstance(block, PreActBottleneck)]

    def remove_block(self, model: Any, block: BlockGroup) -> None:
        stage = cast(nn.Sequential, model.get_submodule(f"layer{block.stage + 1}"))
        old = cast(PreActBottleneck, stage[block.index])
        with torch.device("meta"):  # its projection is the old block's: build nothing, draw no random numbers
            new = PreActShortcut(old.bn1.num_features, old.conv3.out_channels // EXPANSION, old.conv2.stride[0])
        new.downsample = old.downsample
        stage[block.index] = new

    def examples(self) -> dict[str, Arch]:
        cfg = [16, 8, 16, 0, 0, 0, 0, 0, 0, 128, 16, 16, 128, 64, 32, 256, 32, 64, 200]
        return {"preresnet20": Arch(self.family, {"depth": 20}, 5, (3, 8, 8)),
                "removed": Arch(self.family, {"depth": 20, "cfg": cfg}, 5, (3, 8, 8))}


@register_provider
class DenseNetStructure(StructureProvider):
    """Every BN feeds a selection (prunable); every conv's output is concatenated into its dense block's input
    (tied, read by every later BN of the block at its offset) or, for transitions, starts the next block's."""

    family = "densenet"
    offers = frozenset({"bn-scaled-channel-groups"})

    @staticmethod
    def units(model: Any) -> list[tuple[str, Any, bool]]:
        """(name, unit, whether it is a transition), in forward order."""
        out: list[tuple[str, Any, bool]] = []
        for b in (1, 2, 3):
            out += [(f"dense{b}.{j}", layer, False) for j, layer in enumerate(model.get_submodule(f"dense{b}"))]
            if b < 3:
                out.append((f"trans{b}", model.get_submodule(f"trans{b}"), True))
        return out

    def channel_groups(self, model: Any) -> list[ChannelGroup]:
        units = self.units(model)
        readers = [f"{u}.bn1" for u, _, _ in units] + ["bn"]
        # writer name -> (channels, offset in the concatenation, index of its first reader)
        writers: list[tuple[str, int, int, int]] = [("conv1", model.conv1.out_channels, 0, 0)]
        width = model.conv1.out_channels
        for i, (u, unit, transition) in enumerate(units):
            if transition:
                width = 0
            writers.append((f"{u}.conv1", unit.conv1.out_channels, width, i + 1))
            width += unit.conv1.out_channels
        consumers: dict[str, tuple[Consumer, ...]] = {}
        for name, _, offset, first in writers:
            found = []
            for reader, (_, _, transition) in zip(readers[first:], [*units[first:], ("bn", None, True)], strict=True):
                found.append(Consumer(reader, offset=offset))
                if transition:  # a transition's conv starts the next block's concatenation
                    break
            consumers[name] = tuple(found)
        concat: dict[str, ChannelGroup] = {}
        for name, channels, _, _ in writers:
            reads = {c.module for c in consumers[name]}
            mates = tuple(w for w in consumers if w != name and reads & {c.module for c in consumers[w]})
            concat[name] = ChannelGroup(name, channels, (name,), (), consumers[name], tie="concat", tied_with=mates,
                                        prunable=False)
        out = [concat["conv1"]]
        for u, unit, _ in units:
            out += [select_group(f"{u}.bn1", f"{u}.select", unit.select, f"{u}.conv1"), concat[f"{u}.conv1"]]
        return [*out, select_group("bn", "select", model.select, "fc")]

    def examples(self) -> dict[str, Arch]:
        return {"densenet10": Arch(self.family, {"depth": 10, "growth_rate": 4}, 5, (3, 8, 8))}
