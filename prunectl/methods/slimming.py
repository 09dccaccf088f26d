"""Network Slimming (Liu et al. 2017): one global threshold on |BN scale| decides every layer's width."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from prunectl.core.spec import Spec, check, helptext
from prunectl.methods.base import Method, MethodFacts, PruneContext, PruneOutcome, register_method
from prunectl.models import ArchModel
from prunectl.structure import (
    ChannelGroup,
    KeepMap,
    StructureEdit,
    apply_edit,
    bn_scales,
    channel_groups,
    require,
    top_indices,
)
from prunectl.training.hooks import TrainingBehaviour


@dataclass(frozen=True)
class SlimmingSettings(Spec):
    ratio: float = helptext("fraction of all BN channels under the global |gamma| threshold (the paper's percent: "
                            "VGG-19 0.7, PreResNet-164 and DenseNet-40 0.4, ImageNet VGG-11 0.5)", default=0.7)
    min_channels: int = helptext("channels every layer keeps at least (the seed has no floor and can empty a "
                                 "layer)", default=1)

    def __post_init__(self) -> None:
        check(0 < self.ratio < 1, f"slimming: ratio must be in (0, 1), got {self.ratio}")
        check(isinstance(self.min_channels, int) and not isinstance(self.min_channels, bool)
              and self.min_channels >= 1, f"slimming: min_channels must be an integer >= 1, got {self.min_channels!r}")


@dataclass(frozen=True)
class SlimmingTraining(Spec):
    """Network Slimming's training: the L1 penalty s·Σ|γ| on every BN scale (`train --sparsity S` is short for
    `train --method slimming --set sparsity=S`)."""

    sparsity: float = helptext("the penalty s on |BN scale| (the paper: 1e-4 for VGG, 1e-5 for PreResNet and "
                               "DenseNet)")

    def __post_init__(self) -> None:
        check(0 < self.sparsity < float("inf"), f"slimming: sparsity must be a finite number > 0, got {self.sparsity} (train without a method "
                                 "for no penalty)")


class SparsityPenalty(TrainingBehaviour):
    """Adds s · sign(γ) to the gradient of every BatchNorm scale γ after backward: the subgradient of the
    paper's s·Σ|γ| (Liu et al. 2017, eq. 1), with γ's weight decay left as for every other weight."""

    def __init__(self, sparsity: float) -> None:
        self.sparsity = sparsity

    def after_backward(self, model: nn.Module) -> None:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight is not None and m.weight.grad is not None:
                m.weight.grad.add_(torch.sign(m.weight.detach()), alpha=self.sparsity)


@dataclass(frozen=True)
class SlimmingChoice:
    """What the threshold decided: kept channels per group, the threshold, and where the floor bound."""

    keep: KeepMap
    threshold: float
    total: int
    floor_bound: list[str]


def scored_groups(model: ArchModel) -> list[ChannelGroup]:
    """The prunable groups with a BN scale: every BatchNorm2d of the net (the global threshold ranks them all)."""
    require(model, "bn-scaled-channel-groups", method="slimming")
    return [g for g in channel_groups(model) if g.prunable and g.bn is not None]


def select_channels(model: ArchModel, ratio: float, min_channels: int = 1) -> SlimmingChoice:
    """Keep |gamma| > the global threshold, as the seed: sorted(|gamma| of all BNs)[int(total x ratio)].

    A layer the threshold would leave with fewer than `min_channels` keeps its top-|gamma| `min_channels`
    (all of them if it has fewer).
    """
    groups = scored_groups(model)
    scores = {g.name: bn_scales(model, g) for g in groups}
    pooled = torch.sort(torch.cat(list(scores.values()))).values
    threshold = pooled[int(pooled.numel() * ratio)]
    keep: KeepMap = {}
    floor_bound = []
    for g in groups:
        kept = [int(i) for i in torch.nonzero(scores[g.name] > threshold).flatten()]
        floor = min(min_channels, g.channels)
        if len(kept) < floor:
            kept = top_indices(scores[g.name], floor)
            floor_bound.append(g.name)
        keep[g.name] = kept
    return SlimmingChoice(keep, float(threshold), int(pooled.numel()), floor_bound)


@register_method
class SlimmingPruner(Method):
    """Network Slimming (Liu et al. 2017): train with an L1 penalty on BN scales (`--sparsity`), then remove
    every channel whose |gamma| falls under one threshold taken over all BNs of the net.

    Channels go with their conv where the BN follows one (VGG, PreResNet's inner convs); a BN on a residual or
    dense connection keeps its size and its `ChannelSelection` drops them (PreResNet, DenseNet). Unlike the seed,
    no layer is emptied: `min_channels` is a floor, and `report["floor_bound"]` lists where it decided.

    >>> from prunectl.core.hparams import slimming_training
    >>> from prunectl.methods import get_method
    >>> from prunectl.models import create_model
    >>> method, SPARSE = get_method("slimming"), slimming_training(1e-4)
    >>> out = method.prune(create_model("smallcnn"), SlimmingSettings(ratio=0.5), PruneContext(training=SPARSE))
    >>> out.model.to_arch().name, out.report["floor_bound"]
    ('smallcnn-slim0.5', ['features.0', 'features.4', 'features.8', 'features.12'])
    """

    facts = MethodFacts(
        name="slimming", structured=True, trains=True, per_seed_architecture=True,
        summary="Network Slimming: an L1 penalty on BN scales in training, then one global |gamma| threshold",
        citation="Liu et al., Learning Efficient Convolutional Networks through Network Slimming, ICCV 2017",
        imagenet_finetune_epochs=5)
    settings = SlimmingSettings
    training_settings = SlimmingTraining

    def training(self, settings: SlimmingTraining, model: ArchModel) -> SparsityPenalty:
        return SparsityPenalty(settings.sparsity)

    def prune(self, model: ArchModel, settings: SlimmingSettings, context: PruneContext) -> PruneOutcome:
        scored_groups(model)  # refuse an unsupported model before any remark
        if context.training is None or context.training.method != self.name:
            context.note("warning: the baseline was not trained with --sparsity; Network Slimming expects the BN "
                         "scales to be sparsified (s = 1e-4 for VGG, 1e-5 for PreResNet / DenseNet)")
        choice = select_channels(model, settings.ratio, settings.min_channels)
        if choice.floor_bound:
            context.note(f"slimming: the per-layer floor (min_channels={settings.min_channels}) bound in "
                         f"{len(choice.floor_bound)} layer(s): {', '.join(choice.floor_bound)}")
        base = model.arch_name or model.family
        edit = StructureEdit(choice.keep)
        pruned = apply_edit(model, edit, name=f"{base}-slim{settings.ratio}")
        kept = sum(len(v) for v in choice.keep.values())
        report: dict[str, Any] = {
            "threshold": choice.threshold, "ratio": settings.ratio, "widths": {n: len(v) for n, v in choice.keep.items()},
            "kept_channels": kept, "total_channels": choice.total, "pruned_fraction": 1 - kept / choice.total,
            "floor_bound": choice.floor_bound,
        }
        return PruneOutcome(pruned, None, report, edit)
