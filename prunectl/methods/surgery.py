"""Channel surgery: list a model's channel groups, then rebuild it smaller without the channels removed."""

from __future__ import annotations

import abc
import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, cast

import torch
from torch import nn

from prunectl.errors import BadValueError
from prunectl.models import Arch, ArchModel, build_model

# A slicing plan: module name -> (indices kept along dim 0 (outputs), along dim 1 (inputs)); None keeps it whole.
Slices = tuple[list[int] | None, list[int] | None]
Plan = dict[str, Slices]
KeepMap = dict[str, list[int]]


@dataclass(frozen=True)
class ChannelGroup:
    """A set of channels removed together, with the layers that shrink with it.

    kind "conv": the output channels of `conv` and of its BatchNorm `bn` (None where the family has none) are
    sliced, and so are the input channels of every layer that reads them. kind "select": `bn` normalises a
    shared tensor (a residual or dense connection) and feeds a `ChannelSelection` (`meta["select"]`); the BN keeps
    its size, the selection's indexes change and the consumer's inputs are sliced, as the seed's resprune.py and
    denseprune.py do. `channels` is the width the consumer sees now, and keep indices count in that space
    (0 .. channels-1; for "select" groups `meta["selected"]` maps them to BN channels). `prunable` is False
    where the outputs are tied (a residual sum, a concatenation). `meta` carries family facts (stage, block,
    `conv_id` in the seeds' numbering).
    """

    name: str
    channels: int
    conv: str | None
    bn: str | None
    kind: str = "conv"
    prunable: bool = True
    meta: Mapping[str, Any] = field(default_factory=dict)


class FamilySurgery(abc.ABC):
    """How one model family is cut. Subclasses set `family` and implement `groups` and `rewrite`.

    `rewrite(model, keep)` gets a keep list for every group (whole for those not pruned) and returns the new
    Arch config plus a slicing plan, and for "select" groups the new kept BN channels of each selection layer.

    >>> from prunectl.models import create_model
    >>> m = create_model("smallcnn")
    >>> [g.name for g in channel_groups(m)][:2]
    ['features.0', 'features.4']
    >>> remove_channels(m, {"features.0": [0, 5, 7]}).to_arch().config["cfg"][:3]
    [3, 'M', 32]
    """

    family: ClassVar[str]

    @abc.abstractmethod
    def groups(self, model: Any) -> list[ChannelGroup]:
        """Every channel group of `model`, in forward order."""

    @abc.abstractmethod
    def rewrite(self, model: Any, keep: KeepMap) -> tuple[dict[str, Any], Plan, KeepMap]:
        """(new config, slicing plan, {selection module: new kept BN channels})."""


SURGERIES: dict[str, FamilySurgery] = {}


def register_surgery(cls: type[FamilySurgery]) -> type[FamilySurgery]:
    SURGERIES[cls.family] = cls()
    return cls


def surgery_for(model: ArchModel) -> FamilySurgery:
    """The family's surgery, or a one-line error naming the families that have one."""
    if model.family not in SURGERIES:
        raise BadValueError(f"channel pruning supports the families {', '.join(sorted(SURGERIES))}; "
                            f"not '{model.family}'")
    return SURGERIES[model.family]


def channel_groups(model: ArchModel) -> list[ChannelGroup]:
    """The channel groups of `model` (prunable or not), in forward order."""
    return surgery_for(model).groups(model)


def _check_keep(groups: Mapping[str, ChannelGroup], keep: Mapping[str, Sequence[int]]) -> KeepMap:
    full = {name: list(range(g.channels)) for name, g in groups.items()}
    for name, indices in keep.items():
        if name not in groups:
            valid = [n for n, g in groups.items() if g.prunable]
            shown = ", ".join(valid[:8]) + (", ..." if len(valid) > 8 else "")
            raise BadValueError(f"no channel group '{name}' in this model (prunable: {shown})")
        group = groups[name]
        kept = sorted(int(i) for i in indices)
        if kept == full[name]:
            continue
        if not group.prunable:
            raise BadValueError(f"channel group '{name}' cannot be pruned (its outputs are tied to a residual or "
                                f"concatenation)")
        if not kept or len(set(kept)) != len(kept) or kept[0] < 0 or kept[-1] >= group.channels:
            raise BadValueError(f"channel group '{name}': keep needs 1 to {group.channels} distinct indices in "
                                f"0..{group.channels - 1}, got {list(indices)[:8]}")
        full[name] = kept
    return full


def remove_channels(model: ArchModel, keep: Mapping[str, Sequence[int]], name: str | None = None) -> ArchModel:
    """A new, smaller dense model without the channels not in `keep` ({group name: kept indices}).

    Groups absent from `keep` stay whole; weights are sliced copies of `model`'s (left untouched), and
    `build_model(result.to_arch())` builds the same network. `name` becomes the Arch's name (default: model's).
    """
    surgery = surgery_for(model)
    groups = {g.name: g for g in surgery.groups(model)}
    config, plan, selections = surgery.rewrite(model, _check_keep(groups, keep))
    arch = Arch(model.family, config, model.num_classes, model.input_size,
                name=model.arch_name if name is None else name)
    with torch.device("meta"):  # no weight init: the state is copied in, and torch's RNG stays untouched
        pruned = build_model(arch)
    state = _sliced_state(model, pruned, plan, selections)
    pruned.load_state_dict(state, assign=True)
    return pruned.train(model.training)


def _sliced_state(model: nn.Module, target: nn.Module, plan: Plan, selections: KeepMap) -> dict[str, torch.Tensor]:
    old = model.state_dict()
    state: dict[str, torch.Tensor] = {}
    for key, like in target.state_dict().items():
        module, _, leaf = key.rpartition(".")
        tensor = old[key].detach()
        if module in selections and leaf == "indexes":
            tensor = torch.zeros_like(tensor)
            tensor[selections[module]] = 1.0
        else:
            out_idx, in_idx = plan.get(module, (None, None))
            if out_idx is not None and tensor.dim() >= 1:
                tensor = tensor.index_select(0, torch.tensor(out_idx, device=tensor.device))
            if in_idx is not None and tensor.dim() >= 2:
                tensor = tensor.index_select(1, torch.tensor(in_idx, device=tensor.device))
            tensor = tensor.clone()
        if tensor.shape != like.shape:
            raise RuntimeError(f"channel surgery produced {key} of shape {tuple(tensor.shape)}, "
                               f"the pruned architecture needs {tuple(like.shape)}")
        state[key] = tensor
    return state


# ---- scores used by the methods ----

def filter_l1_norms(model: nn.Module, group: ChannelGroup) -> torch.Tensor:
    """Sum of |w| of each output filter of the group's conv (Li et al. 2017)."""
    if group.conv is None:
        raise BadValueError(f"channel group '{group.name}' has no conv filters to score")
    weight = cast(nn.Conv2d, model.get_submodule(group.conv)).weight.detach()
    return weight.abs().flatten(1).sum(1).float().cpu()


def bn_scales(model: nn.Module, group: ChannelGroup) -> torch.Tensor:
    """|gamma| of the group's BN, one per channel the consumer sees (Network Slimming's score)."""
    if group.bn is None:
        raise BadValueError(f"channel group '{group.name}' has no BatchNorm scale to score")
    gamma = cast(nn.BatchNorm2d, model.get_submodule(group.bn)).weight.detach().abs().float().cpu()
    if group.kind == "select":
        gamma = gamma[list(group.meta["selected"])]
    return gamma


def top_indices(scores: torch.Tensor, count: int) -> list[int]:
    """Sorted indices of the `count` highest scores (ties go to the lower index)."""
    order = torch.argsort(scores, descending=True, stable=True)[:count]
    return sorted(int(i) for i in order)


def expand_flat(kept: Sequence[int], positions: int) -> list[int]:
    """Input indices of a Linear reading a flattened (channels, positions) map, for the channels kept."""
    return [c * positions + p for c in kept for p in range(positions)]


# ---- plain conv stacks ----

@register_surgery
class CifarVGGSurgery(FamilySurgery):
    """Every conv of `features` is a group (with the BN after it); the head's first Linear loses inputs."""

    family = "cifar_vgg"

    def groups(self, model: Any) -> list[ChannelGroup]:
        out = []
        for layer, (i, conv) in enumerate(self.convs(model), start=1):
            has_bn = i + 1 < len(model.features) and isinstance(model.features[i + 1], nn.BatchNorm2d)
            out.append(ChannelGroup(f"features.{i}", conv.out_channels, f"features.{i}",
                                    f"features.{i + 1}" if has_bn else None, meta={"conv_id": layer}))
        return out

    @staticmethod
    def convs(model: Any) -> list[tuple[int, nn.Conv2d]]:
        return [(i, m) for i, m in enumerate(model.features) if isinstance(m, nn.Conv2d)]

    def head(self, model: Any, kept: list[int]) -> Plan:
        return {"classifier" if model.head == "linear" else "classifier.0": (None, kept)}

    def rewrite(self, model: Any, keep: KeepMap) -> tuple[dict[str, Any], Plan, KeepMap]:
        plan: Plan = {}
        config = copy.deepcopy(dict(model.to_arch().config))
        widths = iter(len(keep[g.name]) for g in self.groups(model))
        config["cfg"] = [v if v == "M" else next(widths) for v in config["cfg"]]
        previous = None
        for group in self.groups(model):
            kept = keep[group.name]
            plan[group.name] = (kept, previous)
            if group.bn is not None:
                plan[group.bn] = (kept, None)
            previous = kept
        assert previous is not None
        plan.update(self.head(model, previous))
        return config, plan, {}


@register_surgery
class ImageNetVGGSurgery(CifarVGGSurgery):
    """As the CIFAR VGG; the "fc4096" head reads a flattened 7x7 map, so each kept channel brings 49 inputs."""

    family = "imagenet_vgg"

    def head(self, model: Any, kept: list[int]) -> Plan:
        if model.head == "gap":
            return {"classifier": (None, kept)}
        return {"classifier.0": (None, expand_flat(kept, 49))}


@register_surgery
class LeNetSurgery(FamilySurgery):
    """conv1 and conv2 (no BN; the bias goes with the filter); fc1 reads conv2's flattened map."""

    family = "lenet"

    def groups(self, model: Any) -> list[ChannelGroup]:
        return [ChannelGroup(f"features.conv{i}", model.features.get_submodule(f"conv{i}").out_channels,
                             f"features.conv{i}", None, meta={"conv_id": i}) for i in (1, 2)]

    def rewrite(self, model: Any, keep: KeepMap) -> tuple[dict[str, Any], Plan, KeepMap]:
        k1, k2 = keep["features.conv1"], keep["features.conv2"]
        positions = model.classifier.fc1.in_features // model.features.conv2.out_channels
        config = copy.deepcopy(dict(model.to_arch().config))
        config["conv_widths"] = [len(k1), len(k2)]
        plan: Plan = {"features.conv1": (k1, None), "features.conv2": (k2, k1),
                      "classifier.fc1": (None, expand_flat(k2, positions))}
        return config, plan, {}
