"""Channel surgery for the residual and dense families: CIFAR / ImageNet ResNets, PreResNet, DenseNet."""

from __future__ import annotations

import copy
from typing import Any, cast

from torch import nn

from prunectl.methods.surgery import ChannelGroup, FamilySurgery, KeepMap, Plan, register_surgery
from prunectl.models.imagenet import ShortcutBlock
from prunectl.models.layers import ChannelSelection
from prunectl.models.preresnet import describe_selections


def select_group(bn: str, select: str, selection: ChannelSelection) -> ChannelGroup:
    """A BN on a shared tensor feeding `select`: prunable through the selection only."""
    kept = selection.kept()
    return ChannelGroup(bn, len(kept), None, bn, kind="select", meta={"select": select, "selected": kept})


def reselect(selection: ChannelSelection, keep: list[int]) -> list[int]:
    """BN channels a selection keeps when its consumer keeps the inputs `keep` (positions among those selected)."""
    kept = selection.kept()
    return [kept[i] for i in keep]


@register_surgery
class CifarResNetSurgery(FamilySurgery):
    """Only each basic block's conv1 is prunable (conv2's outputs are summed with the shortcut).

    `meta["conv_id"]` counts the 3x3 convs from 1 at the stem, so block k (1-based over the net) has its first
    conv at 2k, as in the seed's res56prune.py / res110prune.py.
    """

    family = "cifar_resnet"

    def groups(self, model: Any) -> list[ChannelGroup]:
        out = [ChannelGroup("conv1", model.conv1.out_channels, "conv1", "bn1", prunable=False, meta={"conv_id": 1})]
        k = 0
        for s, stage in enumerate(model.stages):
            for b, block in enumerate(stage):
                k += 1
                p = f"layer{s + 1}.{b}"
                out.append(ChannelGroup(f"{p}.conv1", block.conv1.out_channels, f"{p}.conv1", f"{p}.bn1",
                                        meta={"stage": s, "block": k, "conv_id": 2 * k}))
                out.append(ChannelGroup(f"{p}.conv2", block.conv2.out_channels, f"{p}.conv2", f"{p}.bn2",
                                        prunable=False, meta={"stage": s, "block": k, "conv_id": 2 * k + 1}))
        return out

    def rewrite(self, model: Any, keep: KeepMap) -> tuple[dict[str, Any], Plan, KeepMap]:
        config = copy.deepcopy(dict(model.to_arch().config))
        plan: Plan = {}
        mids = []
        for s, stage in enumerate(model.stages):
            row = []
            for b in range(len(stage)):
                p = f"layer{s + 1}.{b}"
                kept = keep[f"{p}.conv1"]
                plan.update({f"{p}.conv1": (kept, None), f"{p}.bn1": (kept, None), f"{p}.conv2": (None, kept)})
                row.append(len(kept))
            mids.append(row)
        config["mid_widths"] = mids
        return config, plan, {}


@register_surgery
class ImageNetResNetSurgery(FamilySurgery):
    """Basic blocks: conv1 is prunable; bottlenecks: conv1 and conv2. The last conv of a block is tied.

    Blocks count from 1 over the net (removed-branch blocks included); for basic blocks `meta["conv_id"]` is the
    seed's id (stem 1, block k's first conv 2k, 1x1 downsample convs not counted), as in imagenet/l1-norm-pruning.
    A block's input selection (`in_select`, ResNet-50-2x) is left as it is.
    """

    family = "imagenet_resnet"

    def branches(self, model: Any) -> list[tuple[str, int, int, int, nn.Module]]:
        """(prefix, stage, index in stage, block number, block) of each block that keeps its residual branch."""
        out, k = [], 0
        for s, stage in enumerate(model.stages):
            for b, block in enumerate(stage):
                k += 1
                if not isinstance(block, ShortcutBlock):
                    out.append((f"layer{s + 1}.{b}", s, b, k, block))
        return out

    def groups(self, model: Any) -> list[ChannelGroup]:
        out = [ChannelGroup("conv1", model.conv1.out_channels, "conv1", "bn1", prunable=False, meta={"conv_id": 1})]
        basic = model.block_kind == "basic"
        for p, s, _, k, block in self.branches(model):
            convs = 2 if basic else 3
            for j in range(1, convs + 1):
                meta: dict[str, Any] = {"stage": s, "block": k, "position": j}
                if basic:
                    meta["conv_id"] = 2 * k + j - 1
                conv = cast(nn.Conv2d, block.get_submodule(f"conv{j}"))
                out.append(ChannelGroup(f"{p}.conv{j}", conv.out_channels, f"{p}.conv{j}", f"{p}.bn{j}",
                                        prunable=j < convs, meta=meta))
        return out

    def rewrite(self, model: Any, keep: KeepMap) -> tuple[dict[str, Any], Plan, KeepMap]:
        config = copy.deepcopy(dict(model.to_arch().config))
        plan: Plan = {}
        convs = 2 if model.block_kind == "basic" else 3
        for p, s, b, _, _ in self.branches(model):
            previous: list[int] | None = None
            mids = []
            for j in range(1, convs):
                kept = keep[f"{p}.conv{j}"]
                plan.update({f"{p}.conv{j}": (kept, previous), f"{p}.bn{j}": (kept, None)})
                mids.append(len(kept))
                previous = kept
            plan[f"{p}.conv{convs}"] = (None, previous)
            config["blocks"][s][b]["mid"] = mids
        return config, plan, {}


@register_surgery
class PreResNetSurgery(FamilySurgery):
    """Each bottleneck: bn1 (on the block input) through its selection, conv1 (with bn2), conv2 (with bn3);
    conv3 and the stem are tied to the residual sum. The final `bn` is pruned through `select` as well."""

    family = "preresnet"

    @staticmethod
    def blocks(model: Any) -> list[tuple[str, Any]]:
        stages = (model.layer1, model.layer2, model.layer3)
        return [(f"layer{s + 1}.{b}", block) for s, stage in enumerate(stages) for b, block in enumerate(stage)]

    def groups(self, model: Any) -> list[ChannelGroup]:
        out = [ChannelGroup("conv1", model.conv1.out_channels, "conv1", None, prunable=False)]
        for p, block in self.blocks(model):
            out += [
                select_group(f"{p}.bn1", f"{p}.select", block.select),
                ChannelGroup(f"{p}.conv1", block.conv1.out_channels, f"{p}.conv1", f"{p}.bn2"),
                ChannelGroup(f"{p}.conv2", block.conv2.out_channels, f"{p}.conv2", f"{p}.bn3"),
                ChannelGroup(f"{p}.conv3", block.conv3.out_channels, f"{p}.conv3", None, prunable=False),
            ]
        return [*out, select_group("bn", "select", model.select)]

    def rewrite(self, model: Any, keep: KeepMap) -> tuple[dict[str, Any], Plan, KeepMap]:
        plan: Plan = {}
        selections: KeepMap = {}
        cfg: list[int] = []
        for p, block in self.blocks(model):
            ks, k1, k2 = keep[f"{p}.bn1"], keep[f"{p}.conv1"], keep[f"{p}.conv2"]
            selections[f"{p}.select"] = reselect(block.select, ks)
            plan.update({f"{p}.conv1": (k1, ks), f"{p}.bn2": (k1, None), f"{p}.conv2": (k2, k1),
                         f"{p}.bn3": (k2, None), f"{p}.conv3": (None, k2)})
            cfg += [len(ks), len(k1), len(k2)]
        selections["select"] = reselect(model.select, keep["bn"])
        plan["fc"] = (None, keep["bn"])
        cfg.append(len(keep["bn"]))
        config = copy.deepcopy(dict(model.to_arch().config))
        config["cfg"] = cfg
        config["select"] = describe_selections(list(selections.values()))
        return config, plan, selections


@register_surgery
class DenseNetSurgery(FamilySurgery):
    """Every BN feeds a selection (prunable); every conv's output is concatenated or shared (tied)."""

    family = "densenet"

    @staticmethod
    def units(model: Any) -> list[tuple[str, Any]]:
        out: list[tuple[str, Any]] = []
        for b in (1, 2, 3):
            out += [(f"dense{b}.{j}", layer) for j, layer in enumerate(model.get_submodule(f"dense{b}"))]
            if b < 3:
                out.append((f"trans{b}", model.get_submodule(f"trans{b}")))
        return out

    def groups(self, model: Any) -> list[ChannelGroup]:
        out = [ChannelGroup("conv1", model.conv1.out_channels, "conv1", None, prunable=False)]
        for u, unit in self.units(model):
            out += [select_group(f"{u}.bn1", f"{u}.select", unit.select),
                    ChannelGroup(f"{u}.conv1", unit.conv1.out_channels, f"{u}.conv1", None, prunable=False)]
        return [*out, select_group("bn", "select", model.select)]

    def rewrite(self, model: Any, keep: KeepMap) -> tuple[dict[str, Any], Plan, KeepMap]:
        plan: Plan = {}
        selections: KeepMap = {}
        for u, unit in self.units(model):
            selections[f"{u}.select"] = reselect(unit.select, keep[f"{u}.bn1"])
            plan[f"{u}.conv1"] = (None, keep[f"{u}.bn1"])
        selections["select"] = reselect(model.select, keep["bn"])
        plan["fc"] = (None, keep["bn"])
        config = copy.deepcopy(dict(model.to_arch().config))
        config["cfg"] = [len(v) for v in selections.values()]
        config["select"] = describe_selections(list(selections.values()))
        return config, plan, selections
