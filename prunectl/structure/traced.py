"""Structure of library models (torchvision, timm), traced by Torch-Pruning's dependency graph.

Each Torch-Pruning group (the output channels of one root conv / linear, and every layer they are coupled with
through BNs, residual sums, concatenations, depthwise convs and SE gates) becomes one `ChannelGroup`, named by
its root layer: the layers whose outputs it cuts are its `producers` (depthwise convs included), its norms
`norms` (at `meta["norm_offsets"]` inside a concatenated tensor), the layers whose inputs it cuts `consumers`.
Edits go through Torch-Pruning's pruning functions and are recorded into the model's `edits` (kept indices in
the unpruned numbering), so `build_model(pruned.to_arch())` replays them on a fresh instance. Only this module
and `prunectl.models.external` import torch_pruning.
"""

from __future__ import annotations

import copy
import weakref
from typing import Any

import torch
from torch import nn

from prunectl.errors import BadValueError
from prunectl.models import Arch, ArchModel
from prunectl.models.external import NORMS, ExternalModel, classifier_layers, dependency_graph, prune_group
from prunectl.structure.groups import ChannelGroup, Consumer
from prunectl.structure.provider import StructureProvider, register_provider

TRACED = frozenset({"channel-groups", "bn-scaled-channel-groups"})
# Norms over the channel dimension of each position (LayerNorm, GroupNorm): cutting channels changes the other
# channels' statistics, so such a group has no exact masked twin (`meta["exact_mask"]` False).
_CROSS_CHANNEL = (nn.LayerNorm, nn.GroupNorm)

_cache: weakref.WeakKeyDictionary[nn.Module, tuple[Any, list[ChannelGroup]]] = weakref.WeakKeyDictionary()


def _signature(model: nn.Module) -> tuple[Any, ...]:
    return tuple((n, tuple(p.shape)) for n, p in model.named_parameters())


def _depthwise(m: nn.Module) -> bool:
    return isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels == m.out_channels


def _unreached(model: nn.Module, graph: Any) -> str | None:
    """The first conv / linear / norm the example input never reaches (data-dependent control flow)."""
    seen = set(graph.module2node)
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear, *NORMS)) and m not in seen:
            return name
    return None


def _as_group(graph: Any, tp_group: Any, index: int) -> ChannelGroup:
    names = graph._module2name
    root = names[tp_group[0].dep.target.module]
    channels = len(tp_group[0].idxs)
    producers: list[str] = []
    norms: list[str] = []
    consumers: dict[str, Consumer] = {}
    offsets: dict[str, int] = {}
    exact, summed, concatenated = True, False, False
    for dep, idxs in tp_group.items:
        module = dep.target.module
        name = names.get(module)
        if name is None:  # a pseudo-op of the graph (add, concat, reshape)
            op = str(getattr(module, "_grad_fn", type(module).__name__))
            summed = summed or "AddBackward" in op
            concatenated = concatenated or "Concat" in type(module).__name__
            continue
        out = graph.is_out_channel_pruning_fn(dep.handler)
        first = int(idxs[0])
        if isinstance(module, nn.Conv2d | nn.Linear):
            if (out or _depthwise(module)) and name not in producers:
                producers.append(name)
            if (not out or _depthwise(module)) and name not in consumers:  # a depthwise conv is both
                positions = max(1, len(idxs) // channels)
                consumers[name] = Consumer(name, offset=first // positions, positions=positions)
        elif isinstance(module, NORMS):
            if name not in norms:
                norms.append(name)
                offsets[name] = first
            exact = exact and not isinstance(module, _CROSS_CHANNEL)
    tie = "concat" if concatenated else "residual" if summed else None
    meta = {"traced": True, "position": index, "exact_mask": exact,
            "norm_offsets": {k: v for k, v in offsets.items() if v}}
    return ChannelGroup(root, channels, tuple(producers), tuple(norms), tuple(consumers.values()), tie=tie,
                        meta=meta)


def traced_groups(model: ArchModel) -> list[ChannelGroup]:
    """The model's channel groups, from its dependency graph (cached while its layer shapes stay the same)."""
    signature = _signature(model)
    cached = _cache.get(model)
    if cached is not None and cached[0] == signature:
        return cached[1]
    graph = dependency_graph(model, model.input_size)
    missing = _unreached(model, graph)
    if missing is not None:
        raise BadValueError(f"cannot trace this model: layer '{missing}' is not reached by an example input "
                            f"(data-dependent control flow?)")
    heads = classifier_layers(model, model.num_classes)
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    tp_groups = sorted(graph.get_all_groups(ignored_layers=heads, root_module_types=(nn.Conv2d, nn.Linear)),
                       key=lambda g: order[graph._module2name[g[0].dep.target.module]])  # forward order
    groups = [_as_group(graph, g, i) for i, g in enumerate(tp_groups)]
    _cache[model] = (signature, groups)
    return groups


def _current_layer(model: nn.Module) -> tuple[list[str], list[Any]]:
    entered: list[str] = []
    handles = [m.register_forward_pre_hook(lambda _m, _i, n=n: entered.append(n))
               for n, m in model.named_modules() if not list(m.children())]
    return entered, handles


def check_forward(model: ArchModel) -> None:
    """Run one example through the cut model; a layer that no longer fits (an op the graph did not see change
    channels) is a one-line error naming it."""
    entered, handles = _current_layer(model)
    mode = model.training
    try:
        with torch.no_grad():
            device = next(model.parameters()).device
            model.eval()(torch.zeros((1, *model.input_size), device=device))
    except RuntimeError as err:
        where = entered[-1] if entered else "the model"
        raise BadValueError(f"cannot prune this model: after the cut, layer '{where}' no longer fits its input "
                            f"({' '.join(str(err).split())[:120]})") from None
    finally:
        for h in handles:
            h.remove()
        model.train(mode)


@register_provider
class TorchvisionStructure(StructureProvider):
    """Channel groups of torchvision models, from Torch-Pruning's dependency graph (no removable blocks)."""

    family = "torchvision"
    offers = TRACED

    def channel_groups(self, model: Any) -> list[ChannelGroup]:
        return traced_groups(model)

    def apply(self, model: Any, keep: dict[str, list[int]], name: str | None) -> ArchModel:
        """`model` cut through Torch-Pruning (kept channels `keep` per group, current numbering), its record of
        edits composed so that the kept indices stay in the unpruned model's numbering."""
        assert isinstance(model, ExternalModel)
        groups = {g.name: g for g in traced_groups(model)}
        work = copy.deepcopy(model)
        graph = dependency_graph(work, work.input_size)
        recorded = {e["group"]: e for e in work.edits}
        for group, kept in keep.items():
            channels = groups[group].channels
            prune_group(graph, work, group, sorted(set(range(channels)) - set(kept)))
            before = recorded.get(group, {"group": group, "channels": channels, "keep": list(range(channels))})
            recorded[group] = {"group": group, "channels": before["channels"],
                               "keep": [before["keep"][i] for i in kept]}
        work.edits = [recorded[g.name] for g in groups.values() if g.name in recorded]
        work.arch_name = model.arch_name if name is None else name
        check_forward(work)
        return work.train(model.training)

    def examples(self) -> dict[str, Arch]:
        small = (3, 16, 16)
        return {"resnet18": Arch(self.family, {"builder": "resnet18", "kwargs": {}, "stem": "cifar",
                                               "edits": []}, 5, small, name="torchvision:resnet18"),
                "mobilenet_v3_small": Arch(self.family, {"builder": "mobilenet_v3_small", "kwargs": {},
                                                         "stem": "cifar", "edits": []}, 5, small,
                                           name="torchvision:mobilenet_v3_small")}


@register_provider
class TimmStructure(TorchvisionStructure):
    """Channel groups of timm models (needs the `timm` extra), traced as for torchvision."""

    family = "timm"

    def examples(self) -> dict[str, Arch]:
        try:
            import timm  # noqa: F401
        except ImportError:
            return {}
        return {"resnet18": Arch(self.family, {"builder": "resnet18", "kwargs": {}, "stem": "cifar", "edits": []},
                                 5, (3, 16, 16), name="timm:resnet18")}



@register_provider
class UserModuleStructure(TorchvisionStructure):
    """Channel groups of your own nn.Module (`prunectl.engine.custom_model`), traced as for torchvision."""

    family = "module"

    def examples(self) -> dict[str, Arch]:
        return {}
