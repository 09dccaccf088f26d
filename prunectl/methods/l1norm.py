"""L1-norm filter pruning (Li et al. 2017): drop the filters with the smallest sum of |w|, then cut them out."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn

from prunectl.core.spec import Spec, check, helptext
from prunectl.errors import BadValueError
from prunectl.methods.base import Method, MethodFacts, PruneContext, PruneOutcome, register_method
from prunectl.models import ArchModel, default_arch
from prunectl.models.cifar_resnet import cifar_resnet_arch
from prunectl.models.cifar_vgg import VGG_CFGS
from prunectl.structure import (
    ChannelGroup,
    KeepMap,
    StructureEdit,
    apply_edit,
    channel_groups,
    filter_l1_norms,
    require,
    top_indices,
)

# The paper's predefined models (docs/protocols.md#l1-norm-filter-pruning-the-papers-variants).
# VGG: kept width per conv. ResNets: (prune ratio per stage, conv ids
# left whole), ids counted from 1 at the stem so block k's first conv is 2k.
VGG_VARIANTS: dict[str, dict[str, list[int | str]]] = {
    "vgg16": {"A": [32, 64, "M", 128, 128, "M", 256, 256, 256, "M", 256, 256, 256, "M", 256, 256, 256]},
}
_SKIP34 = (2, 8, 14, 16, 26, 28, 30, 32)
RESNET_VARIANTS: dict[str, dict[str, tuple[tuple[float, ...], tuple[int, ...]]]] = {
    "resnet56": {"A": ((0.1, 0.1, 0.1), (16, 20, 38, 54)), "B": ((0.6, 0.3, 0.1), (16, 18, 20, 34, 38, 54))},
    "resnet110": {"A": ((0.5, 0.0, 0.0), (36,)), "B": ((0.5, 0.4, 0.3), (36, 38, 74))},
    "resnet34": {"A": ((0.3, 0.3, 0.3, 0.0), _SKIP34), "B": ((0.5, 0.6, 0.4, 0.0), _SKIP34)},
}


@dataclass(frozen=True)
class L1NormSettings(Spec):
    variant: str | None = helptext(
        "a paper model: A for VGG-16; A or B for ResNet-56, ResNet-110 and ImageNet ResNet-34", default=None)
    ratio: float | None = helptext(
        "fraction of the filters of every prunable layer to remove (keeps int(C x (1 - ratio)), at least 1)",
        default=None)
    layer_ratios: Mapping[str, float] = helptext(
        "per channel-group ratios {name: ratio}, e.g. {'features.0': 0.5}; they override `ratio`",
        default_factory=dict)
    skip: tuple[int, ...] = helptext(
        "conv ids left whole (VGG: the n-th conv; ResNets: stem 1, block k's first conv 2k)", default=())
    scope: str = helptext(
        "'layer': `ratio` of each group's filters; 'global': `ratio` of all filters, ranked together by mean |w| "
        "(so layers lose different fractions)", default="layer")
    round_to: int = helptext(
        "kept filters per group rounded to a multiple of this (e.g. 8 for fast kernels; 1 = no rounding)",
        default=1)

    def __post_init__(self) -> None:
        object.__setattr__(self, "layer_ratios", dict(self.layer_ratios))
        object.__setattr__(self, "skip", tuple(int(i) for i in self.skip))
        check(self.variant is None or (self.ratio is None and not self.layer_ratios and not self.skip),
              "l1-norm: give either variant or ratio / layer_ratios / skip, not both")
        check(self.variant is not None or self.ratio is not None or bool(self.layer_ratios),
              "l1-norm: give variant (e.g. 'A') or ratio (e.g. 0.5) or layer_ratios")
        check(self.ratio is None or 0 < self.ratio < 1, f"l1-norm: ratio must be in (0, 1), got {self.ratio}")
        check(self.scope in ("layer", "global"), f"l1-norm: scope must be 'layer' or 'global', got {self.scope!r}")
        check(self.scope == "layer" or (self.ratio is not None and not self.layer_ratios and not self.skip),
              "l1-norm: scope 'global' takes one ratio (no layer_ratios / skip / variant)")
        check(isinstance(self.round_to, int) and not isinstance(self.round_to, bool) and self.round_to >= 1,
              f"l1-norm: round_to must be an integer >= 1, got {self.round_to!r}")
        for name, r in self.layer_ratios.items():
            check(isinstance(r, int | float) and not isinstance(r, bool) and 0 <= r < 1,
                  f"l1-norm: layer_ratios['{name}'] must be a number in [0, 1), got {r!r}")


def variants_text() -> str:
    models = {**{k: list(v) for k, v in VGG_VARIANTS.items()}, **{k: list(v) for k, v in RESNET_VARIANTS.items()}}
    return ", ".join(f"{name} ({'/'.join(v)})" for name, v in models.items())


def paper_model(model: ArchModel) -> str | None:
    """Which unpruned paper model `model` is ("vgg16", "resnet56", "resnet110", "resnet34"), if any."""
    config = model.to_arch().config
    if model.family == "cifar_vgg" and config["cfg"] == VGG_CFGS["vgg16"]:
        return "vgg16"
    if model.family == "cifar_resnet" and config["depth"] in (56, 110):
        dense = cifar_resnet_arch(config["depth"]).config
        if all(config[k] == dense[k] for k in ("stage_widths", "mid_widths")):
            return f"resnet{config['depth']}"
    if model.family == "imagenet_resnet" and config == default_arch("resnet34").config:
        return "resnet34"
    return None


def keep_count(channels: int, ratio: float) -> int:
    """int(C x (1 - ratio)) as the seed computes it, never below one filter."""
    return max(1, int(channels * (1 - ratio)))


def rounded(kept: int, channels: int, round_to: int) -> int:
    """`kept` rounded to the nearest multiple of `round_to` (at least one multiple, at most all channels).

    >>> rounded(29, 64, 8), rounded(3, 64, 8), rounded(29, 30, 8)
    (32, 8, 30)
    """
    if round_to <= 1:
        return kept
    return min(channels, max(round_to, int(round(kept / round_to)) * round_to))


def global_widths(model: ArchModel, groups: list[ChannelGroup], ratio: float) -> dict[str, int]:
    """Kept filters per prunable group when `ratio` of all filters go, ranked together by their mean |w| (the
    L1 norm over the filter's size, so layers of different fan-in compare); every group keeps one at least."""
    prunable = [g for g in groups if g.prunable]
    scores = []
    for g in prunable:
        s = filter_l1_norms(model, g)
        size = sum(cast(nn.Conv2d, model.get_submodule(p)).weight[0].numel() for p in g.producers)
        scores.append(s / size)
    pooled = torch.sort(torch.cat(scores)).values
    threshold = pooled[min(pooled.numel() - 1, int(pooled.numel() * ratio))]
    return {g.name: max(1, int((s >= threshold).sum())) for g, s in zip(prunable, scores, strict=True)}


def variant_widths(model: ArchModel, groups: list[ChannelGroup], variant: str) -> dict[str, int]:
    """Kept filters per prunable group under a paper variant."""
    name = paper_model(model)
    table = VGG_VARIANTS.get(name or "") or RESNET_VARIANTS.get(name or "") or {}
    if variant not in table:
        what = f"{name} has variants {'/'.join(table)}" if name else "this model is none of them (unpruned)"
        raise BadValueError(f"l1-norm variant {variant!r} is defined for {variants_text()}; {what}")
    prunable = [g for g in groups if g.prunable]
    if name in VGG_VARIANTS:
        widths = [int(v) for v in VGG_VARIANTS[name][variant] if v != "M"]
        return {g.name: w for g, w in zip(prunable, widths, strict=True)}
    ratios, skip = RESNET_VARIANTS[str(name)][variant]
    return {g.name: g.channels if g.meta["conv_id"] in skip else keep_count(g.channels, ratios[g.meta["stage"]])
            for g in prunable}


def ratio_widths(groups: list[ChannelGroup], settings: L1NormSettings) -> dict[str, int]:
    """Kept filters per prunable group under `ratio` / `layer_ratios` / `skip`."""
    prunable = [g for g in groups if g.prunable]
    names = {g.name for g in prunable}
    unknown = [n for n in settings.layer_ratios if n not in names]
    if unknown:
        shown = ", ".join(sorted(names)[:8]) + (", ..." if len(names) > 8 else "")
        raise BadValueError(f"l1-norm: layer_ratios names {unknown[0]!r}, not a prunable layer (prunable: {shown})")
    if settings.skip and not any("conv_id" in g.meta for g in prunable):
        raise BadValueError("l1-norm: skip takes conv ids, which this family does not number; use layer_ratios")
    widths = {}
    for g in prunable:
        r = settings.layer_ratios.get(g.name, settings.ratio)
        skipped = g.meta.get("conv_id") in settings.skip
        widths[g.name] = g.channels if r is None or skipped else keep_count(g.channels, r)
    return widths


def select_filters(model: ArchModel, settings: L1NormSettings) -> KeepMap:
    """{group: kept filter indices}, the top-L1 filters of each prunable conv (e.g. for structured masks)."""
    require(model, "channel-groups", method="l1-norm")
    groups = [g for g in channel_groups(model) if g.kind == "conv"]
    if settings.variant is not None:
        widths = variant_widths(model, groups, settings.variant)
    elif settings.scope == "global":
        widths = global_widths(model, groups, float(settings.ratio or 0))
    else:
        widths = ratio_widths(groups, settings)
    by_name = {g.name: g for g in groups}
    widths = {n: rounded(k, by_name[n].channels, settings.round_to) for n, k in widths.items()}
    return {name: top_indices(filter_l1_norms(model, by_name[name]), k) for name, k in widths.items()}


@register_method
class L1NormFilter(Method):
    """Structured pruning by filter L1 norm (Li et al. 2017): a predefined width per layer, the smallest-|w|
    filters removed along with their BN channels and the next layer's inputs.

    Give a paper `variant` (VGG-16-A, ResNet-56/110-A/B, ResNet-34-A/B: docs/protocols.md) or a `ratio` for every
    prunable layer (residual-tied convs are never pruned), optionally per layer through `layer_ratios`.

    >>> from prunectl.methods import get_method
    >>> from prunectl.models import create_model
    >>> method = get_method("l1-norm")
    >>> out = method.prune(create_model("vgg16"), L1NormSettings(variant="A"), PruneContext())
    >>> out.model.to_arch().name, out.report["widths"]["features.0"]
    ('vgg16-l1-A', 32)
    """

    facts = MethodFacts(
        name="l1-norm", structured=True,
        summary="L1-norm filter pruning: predefined per-layer widths, the smallest-|w| filters removed",
        citation="Li et al., Pruning Filters for Efficient ConvNets, ICLR 2017",
        imagenet_finetune_epochs=20, imagenet_scratch_b_capped=True)
    settings = L1NormSettings

    def prune(self, model: ArchModel, settings: L1NormSettings, context: PruneContext) -> PruneOutcome:
        keep = select_filters(model, settings)
        channels = {g.name: g.channels for g in channel_groups(model)}
        ratios = {n: settings.layer_ratios.get(n, settings.ratio) for n in keep}
        floor = [n for n, r in ratios.items() if r is not None and int(channels[n] * (1 - r)) < 1]
        if floor:
            context.note(f"l1-norm: the ratio would empty {len(floor)} group(s); each keeps one filter: "
                         f"{', '.join(floor[:8])}")
        base = model.arch_name or model.family
        if settings.variant is not None:
            tag = f"{paper_model(model)}-l1-{settings.variant}"
        else:
            tag = f"{base}-l1-{settings.ratio if settings.ratio is not None else 'custom'}"
        edit = StructureEdit(keep)
        pruned = apply_edit(model, edit, name=tag)
        groups = {g.name: g.channels for g in channel_groups(model)}
        total = sum(groups[n] for n in keep)
        kept = sum(len(v) for v in keep.values())
        report: dict[str, Any] = {
            "widths": {n: len(v) for n, v in keep.items()},
            "kept_channels": kept, "total_channels": total, "pruned_fraction": 1 - kept / total,
        }
        return PruneOutcome(pruned, None, report, edit)

