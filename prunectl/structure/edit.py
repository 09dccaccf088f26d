"""One structural edit (kept channels per group, blocks to drop), applied by one function, and its masked twin."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from torch import nn

from prunectl.errors import BadValueError
from prunectl.models import Arch, ArchModel, build_model
from prunectl.models.layers import ChannelSelection
from prunectl.structure.groups import BlockGroup, ChannelGroup
from prunectl.structure.provider import provider_for
from prunectl.structure.slicing import keep_inputs, keep_outputs, reselect, shared_copy


@dataclass(frozen=True)
class StructureEdit:
    """What a structured method decided: kept channel indices per channel group (groups not named stay whole)
    and the names of the blocks whose residual branch goes (their shortcut stays).

    >>> StructureEdit({"features.0": [3, 0]}, ("layer1.1",)).to_dict()
    {'keep': {'features.0': [0, 3]}, 'drop': ['layer1.1']}
    """

    keep: Mapping[str, Sequence[int]] = field(default_factory=dict)
    drop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "keep", {str(k): sorted(int(i) for i in v) for k, v in dict(self.keep).items()})
        object.__setattr__(self, "drop", tuple(str(b) for b in self.drop))

    def to_dict(self) -> dict[str, Any]:
        return {"keep": {k: list(v) for k, v in self.keep.items()}, "drop": list(self.drop)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StructureEdit:
        return cls(d.get("keep", {}), tuple(d.get("drop", ())))


@dataclass(frozen=True)
class _Checked:
    """An edit checked against a model: the groups it cuts (with their removed channels) and the blocks it drops."""

    cuts: list[tuple[ChannelGroup, list[int], list[int]]]  # (group, kept, removed)
    drops: list[BlockGroup]


def _check(model: ArchModel, edit: StructureEdit) -> _Checked:
    provider = provider_for(model)
    groups = {g.name: g for g in provider.channel_groups(model)}
    blocks = {b.name: b for b in provider.block_groups(model)} if edit.drop else {}
    drops = []
    for name in edit.drop:
        if name not in blocks:
            shown = ", ".join(list(blocks)[:8]) + (", ..." if len(blocks) > 8 else "")
            raise BadValueError(f"no removable block '{name}' in this {model.family} (removable: {shown or 'none'})")
        drops.append(blocks[name])
    in_dropped = {g: b.name for b in drops for g in b.groups}
    cuts = []
    for name, kept in edit.keep.items():
        if name not in groups:
            valid = [n for n, g in groups.items() if g.prunable]
            shown = ", ".join(valid[:8]) + (", ..." if len(valid) > 8 else "")
            raise BadValueError(f"no channel group '{name}' in this model (prunable: {shown})")
        group = groups[name]
        kept = list(kept)
        if kept == list(range(group.channels)):
            continue
        if not group.prunable:
            raise BadValueError(f"channel group '{name}' cannot be pruned (its outputs are tied to a residual or "
                                f"concatenation)")
        if not kept or len(set(kept)) != len(kept) or kept[0] < 0 or kept[-1] >= group.channels:
            raise BadValueError(f"channel group '{name}': keep needs 1 to {group.channels} distinct indices in "
                                f"0..{group.channels - 1}, got {kept[:8]}")
        if name in in_dropped:
            raise BadValueError(f"channel group '{name}' lies in block '{in_dropped[name]}', which the edit drops")
        removed = sorted(set(range(group.channels)) - set(kept))
        cuts.append((group, kept, removed))
    return _Checked(cuts, drops)


def apply_edit(model: ArchModel, edit: StructureEdit, name: str | None = None) -> ArchModel:
    """A new, physically smaller model: `model` without the channels `edit` removes and the branches it drops.

    Its function equals `masked_model(model, edit)` (removed channels output zero, dropped branches output
    zero); `model` is left untouched, torch's RNG is not used, and `build_model(result.to_arch())` builds the
    same network (the result *is* built that way, with the cut weights loaded). `name` becomes the Arch's name
    (default: `model`'s).

    >>> from prunectl.models import create_model
    >>> pruned = apply_edit(create_model("smallcnn"), StructureEdit({"features.0": [0, 5, 7]}))
    >>> pruned.to_arch().config["cfg"][:3]
    [3, 'M', 32]
    """
    checked = _check(model, edit)
    provider = provider_for(model)
    if not checked.drops:
        own = provider.apply(model, {g.name: kept for g, kept, _ in checked.cuts}, name)
        if own is not None:
            return own
    work = shared_copy(model)
    removed_inputs: dict[str, set[int]] = {}
    for group, kept, removed in checked.cuts:
        for producer in group.producers:
            keep_outputs(work.get_submodule(producer), kept)
        if group.kind == "select":
            reselect(cast(ChannelSelection, work.get_submodule(str(group.selection))),
                     [group.norm_index(c) for c in kept])
        else:
            for norm in group.norms:
                keep_outputs(work.get_submodule(norm), kept)
        for consumer in group.consumers:
            if consumer.selected is not None:
                raise BadValueError(f"channel group '{group.name}' is read through a channel selection, which this version "
                                    "cannot cut; leave that group whole")
            removed_inputs.setdefault(consumer.module, set()).update(i for c in removed for i in consumer.inputs(c))
    for module, removed_set in removed_inputs.items():
        layer = work.get_submodule(module)
        width = cast(torch.Tensor, layer.weight).shape[1]
        keep_inputs(layer, [i for i in range(width) if i not in removed_set])
    for block in checked.drops:
        provider.remove_block(work, block)
    record = work.to_arch()
    arch = Arch(record.family, record.config, record.num_classes, record.input_size,
                name=model.arch_name if name is None else name, notes=record.notes)
    return _rebuilt(arch, work).train(model.training)


def _rebuilt(arch: Arch, work: nn.Module) -> ArchModel:
    with torch.device("meta"):  # no weight init: the state is copied in, and torch's RNG stays untouched
        pruned = build_model(arch)
    state = work.state_dict()
    for key, like in pruned.state_dict().items():
        if key not in state or state[key].shape != like.shape:
            got = tuple(state[key].shape) if key in state else "nothing"
            raise RuntimeError(f"structure edit produced {key} of shape {got}, the edited architecture needs "
                               f"{tuple(like.shape)}")
    pruned.load_state_dict({k: v.detach().clone() for k, v in state.items()}, strict=True, assign=True)
    return pruned


def masked_model(model: ArchModel, edit: StructureEdit) -> ArchModel:
    """A full-size copy of `model` in which each channel `edit` removes outputs exactly zero (its producers'
    filters and biases and its BN's scale and shift zeroed; for a "select" group the BN channels it drops) and
    each dropped branch outputs zero (its `output` layer's weight and bias zeroed): the reference that
    `apply_edit(model, edit)` equals."""
    checked = _check(model, edit)
    ref = copy.deepcopy(model)
    with torch.no_grad():
        for group, _, removed in checked.cuts:
            for producer in group.producers:
                _zero(ref.get_submodule(producer), removed)
            offsets = group.meta.get("norm_offsets", {})  # a norm over a concatenation (traced groups)
            for norm in group.norms:
                _zero(ref.get_submodule(norm), [offsets.get(norm, 0) + group.norm_index(c) for c in removed])
        for block in checked.drops:
            layer = ref.get_submodule(block.output)
            _zero(layer, list(range(cast(torch.Tensor, layer.weight).shape[0])))
    return ref


def _zero(layer: nn.Module, channels: list[int]) -> None:
    for name in ("weight", "bias"):
        tensor = getattr(layer, name, None)
        if tensor is not None:
            tensor[channels] = 0
