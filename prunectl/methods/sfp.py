"""Soft Filter Pruning (He et al., IJCAI 2018): zero the smallest-L2 filters while training, then cut them out.

Training (`train --method sfp --set rate=R`): before the first step, after every `interval` epochs and after
the last one, each chosen conv has its int(N × (1 − R)) filters of smallest L2 norm set to zero, chosen anew
from the current weights each time. Nothing else is masked: the zeroed filters keep their gradients and
momentum and regrow until the next mask (the "soft" part). As the authors' code (github.com/he-y/
soft-filter-pruning, `pruning_cifar10_resnet.py`, class `Mask`) only the conv weights are zeroed; BatchNorm
scale and shift are left alone.

Hard pruning (`prune --method sfp --set rate=R`) turns the trained model into a physically smaller one. A conv
whose outputs feed only the next conv (a block's first conv, a VGG layer) loses its zeroed filters, their BN
channels and the next conv's inputs (`apply_edit`). A conv tied to the residual stream (a block's output conv,
the stem of a CIFAR ResNet) keeps its width: its zeroed filters stay zero through a mask saved with the run,
which fine-tuning and scratch training keep applied, and FLOPs are counted sparse-aware. See docs/methods.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn

from prunectl.core.spec import Spec, check, helptext
from prunectl.errors import ArtifactError, BadValueError
from prunectl.methods.base import Method, MethodFacts, PruneContext, PruneOutcome, register_method
from prunectl.models import ArchModel
from prunectl.structure import (
    StructureEdit,
    apply_edit,
    block_groups,
    channel_groups,
    has_provider,
    offers,
    require,
)
from prunectl.training.hooks import TrainingBehaviour


def _check_rate(rate: float) -> None:
    check(isinstance(rate, int | float) and not isinstance(rate, bool) and 0 < rate <= 1,
          f"sfp: rate (the fraction of filters kept) must be in (0, 1], got {rate!r}")


@dataclass(frozen=True)
class SFPTraining(Spec):
    """Soft Filter Pruning while training (He et al., IJCAI 2018; the CIFAR scripts use rate 0.7, interval 1)."""

    rate: float = helptext("fraction of the filters of every chosen conv that are KEPT (the paper's 'compress "
                           "rate'; 0.7 zeroes int(N x 0.3) of N filters)", default=0.7)
    interval: int = helptext("epochs between masks (the authors' epoch_prune): after 0-based epoch e with "
                             "e % interval == 0, and always after the last epoch", default=1)
    skip_stem: bool = helptext("leave the first conv of the network unmasked (the CIFAR scripts mask it)",
                               default=False)
    skip_shortcuts: bool = helptext("leave projection-shortcut convs unmasked (the authors' ImageNet "
                                    "skip_downsample; CIFAR ResNets have parameter-free shortcuts)", default=False)

    def __post_init__(self) -> None:
        _check_rate(self.rate)
        check(isinstance(self.interval, int) and not isinstance(self.interval, bool) and self.interval >= 1,
              f"sfp: interval must be an integer >= 1 (epochs), got {self.interval!r}")


@dataclass(frozen=True)
class SFPSettings(Spec):
    """Hard pruning of an SFP-trained run: `rate` must be the rate it was trained with."""

    rate: float = helptext("the fraction of filters kept, as the run was trained with (checked)", default=0.7)

    def __post_init__(self) -> None:
        _check_rate(self.rate)


def pruned_count(filters: int, rate: float) -> int:
    """int(N × (1 − rate)), in floating point exactly as the authors' `Mask.get_filter_codebook` computes it.

    >>> pruned_count(16, 0.7), pruned_count(32, 0.7), pruned_count(64, 0.7), pruned_count(64, 0.6)
    (4, 9, 19, 25)
    """
    return int(filters * (1 - rate))


def smallest_filters(weight: torch.Tensor, rate: float) -> torch.Tensor:
    """Indices of the int(N × (1 − rate)) filters (output channels) of smallest L2 norm; ties by index."""
    norms = weight.detach().flatten(1).float().norm(p=2, dim=1)
    return torch.argsort(norms, stable=True)[: pruned_count(weight.shape[0], rate)]


def masked_convs(model: nn.Module, settings: SFPTraining) -> list[str]:
    """The convs SFP masks: every Conv2d, less the stem (the first conv) and the projection shortcuts' convs
    (the structure layer's block shortcuts) when the settings skip them."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    skipped: set[str] = set()
    if settings.skip_stem and names:
        skipped.add(names[0])
    if settings.skip_shortcuts and isinstance(model, ArchModel) and has_provider(model) \
            and offers(model, "removable-blocks"):
        prefixes = [b.shortcut for b in block_groups(model) if b.shortcut]
        skipped.update(n for n in names if any(n == p or n.startswith(p + ".") for p in prefixes))
    return [n for n in names if n not in skipped]


class SoftFilterMask(TrainingBehaviour):
    """Zeroes the smallest-L2 filters of the chosen convs at the start, every `interval` epochs and at the end.

    `zeroed` holds, per conv, a 0/1 vector of the filters the last mask step zeroed, and `steps` how many mask
    steps ran; both go into every checkpoint (the selection itself is recomputed from the weights each time).
    """

    def __init__(self, settings: SFPTraining, model: nn.Module) -> None:
        self.settings = settings
        self.convs = masked_convs(model, settings)
        if not self.convs:
            raise BadValueError("sfp: the model has no conv layers to mask (Soft Filter Pruning prunes conv filters)")
        modules = dict(model.named_modules())
        self.zeroed = {n: torch.zeros(cast(nn.Conv2d, modules[n]).out_channels, dtype=torch.uint8)
                       for n in self.convs}
        self.steps = 0

    def apply_mask(self, model: nn.Module) -> None:
        """One mask step: recompute and zero each chosen conv's smallest filters (weights only)."""
        modules = dict(model.named_modules())
        with torch.no_grad():
            for name in self.convs:
                weight = cast(nn.Conv2d, modules[name]).weight
                index = smallest_filters(weight, self.settings.rate)
                weight[index] = 0
                flags = torch.zeros(weight.shape[0], dtype=torch.uint8, device=weight.device)
                flags[index] = 1
                self.zeroed[name] = flags
        self.steps += 1

    def on_train_start(self, model: nn.Module) -> None:
        self.apply_mask(model)

    def on_epoch_end(self, model: nn.Module, epoch: int, epochs: int) -> None:
        # The authors: `if epoch % epoch_prune == 0 or epoch == epochs - 1` with 0-based epochs.
        if epoch % self.settings.interval == 0 or epoch == epochs - 1:
            self.apply_mask(model)

    def state_dict(self) -> dict[str, torch.Tensor]:
        state = {f"zeroed_{i}": self.zeroed[n] for i, n in enumerate(self.convs)}
        return {**state, "steps": torch.tensor(self.steps, dtype=torch.int64)}

    def load_state_dict(self, state: Any) -> None:
        expected = {f"zeroed_{i}" for i in range(len(self.convs))} | {"steps"}
        if set(state) != expected:
            raise ArtifactError(f"the SFP state in the checkpoint does not match this model's {len(self.convs)} "
                                "masked convs")
        for i, name in enumerate(self.convs):
            self.zeroed[name] = state[f"zeroed_{i}"].to(torch.uint8)
        self.steps = int(state["steps"])


@dataclass(frozen=True)
class HardPruning:
    """What hard pruning decided: the edit (physically removed filters), the kept filters of the convs that stay
    full width (masked), and per conv how many filters are kept and how."""

    edit: StructureEdit
    keep: dict[str, list[int]]  # every masked conv's kept filters
    masked_keep: dict[str, list[int]]  # those of the convs that keep their width
    layers: dict[str, dict[str, Any]]


def plan_hard_pruning(model: ArchModel, settings: SFPTraining) -> HardPruning:
    """Which zeroed filters are removed and which are kept as a mask (the SFP selection, recomputed from the
    final weights: the last mask step left exactly these filters zero)."""
    convs = masked_convs(model, settings)
    modules = dict(model.named_modules())
    keep_of = {}
    for name in convs:
        weight = cast(nn.Conv2d, modules[name]).weight
        gone = set(smallest_filters(weight, settings.rate).tolist())
        keep_of[name] = [i for i in range(weight.shape[0]) if i not in gone]
    keep, removed_by = {}, {}
    for group in channel_groups(model):
        conv = group.conv if group.kind == "conv" else None
        if conv in keep_of and group.prunable and group.tie is None and group.producers == (conv,):
            keep[group.name] = keep_of[conv]
            removed_by[conv] = group.name
    layers = {n: {"filters": cast(nn.Conv2d, modules[n]).out_channels, "kept": len(k),
                  "how": "removed" if n in removed_by else "masked"} for n, k in keep_of.items()}
    masked_keep = {n: k for n, k in keep_of.items() if n not in removed_by}
    return HardPruning(StructureEdit(keep), keep_of, masked_keep, layers)


def filter_mask(model: nn.Module, keep: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    """{conv.weight: 0/1 tensor of the weight's shape} that zeroes every filter not in `keep[conv]`."""
    modules = dict(model.named_modules())
    masks = {}
    for name, kept in keep.items():
        weight = cast(nn.Conv2d, modules[name]).weight
        mask = torch.zeros_like(weight, memory_format=torch.contiguous_format)
        mask[kept] = 1
        masks[f"{name}.weight"] = mask
    return masks


def trained_settings(context: PruneContext, rate: float) -> SFPTraining:
    """The SFP training settings of the run being pruned; a run not trained with SFP, or at another rate, is
    refused (hard pruning only removes what soft pruning zeroed)."""
    training = context.training
    if training is None or training.method != "sfp":
        how = f"with method '{training.method}'" if training is not None else "without a training-time method"
        raise BadValueError(f"sfp: prune --method sfp hard-prunes a run trained with SFP (train --method sfp "
                            f"--set rate={rate}); this run was trained {how}")
    trained = SFPTraining.from_dict(training.settings)
    if trained.rate != rate:
        raise BadValueError(f"sfp: this run was trained with rate={trained.rate}, not rate={rate}; prune it with "
                            f"--set rate={trained.rate} (or train another run at rate {rate})")
    return trained


@register_method
class SoftFilterPruning(Method):
    """Soft Filter Pruning (He et al., IJCAI 2018): train with the smallest-L2 filters of every conv zeroed
    after each epoch (they keep training), then remove them.

    >>> from prunectl.core.hparams import MethodTraining
    >>> from prunectl.methods import get_method
    >>> from prunectl.models import create_model
    >>> method, model = get_method("sfp"), create_model("resnet20")
    >>> method.training(SFPTraining(rate=0.7), model).on_train_start(model)   # what training leaves
    >>> out = method.prune(model, SFPSettings(rate=0.7), PruneContext(training=MethodTraining("sfp", {})))
    >>> out.report["layers"]["layer1.0.conv1"], out.model.layer1[0].conv1.out_channels
    ({'filters': 16, 'kept': 12, 'how': 'removed'}, 12)
    """

    facts = MethodFacts(
        name="sfp", structured=True, trains=True,
        summary="Soft Filter Pruning: zero the smallest-L2 filters of every conv after each epoch while training "
                "(they keep learning), then remove them",
        citation="He et al., Soft Filter Pruning for Accelerating Deep Convolutional Neural Networks, IJCAI 2018")
    settings = SFPSettings
    training_settings = SFPTraining

    def training(self, settings: SFPTraining, model: ArchModel) -> SoftFilterMask:
        require(model, "conv-weights", method="sfp")
        return SoftFilterMask(settings, model)

    def prune(self, model: ArchModel, settings: SFPSettings, context: PruneContext) -> PruneOutcome:
        require(model, "conv-weights", method="sfp")
        trained = trained_settings(context, settings.rate)
        require(model, "channel-groups", method="sfp")
        plan = plan_hard_pruning(model, trained)
        modules = dict(model.named_modules())
        live = [n for n, keep in plan.keep.items() if _live_filters(cast(nn.Conv2d, modules[n]).weight, keep)]
        if live:
            context.note(f"sfp: {len(live)} conv(s) have non-zero weights in the filters hard pruning removes "
                         f"(e.g. {live[0]}): the run did not end with a mask step, so pruning changes its function")
        base = model.arch_name or model.family
        pruned = apply_edit(model, plan.edit, name=f"{base}-sfp{settings.rate}")
        mask = filter_mask(pruned, plan.masked_keep) if plan.masked_keep else None
        if mask:
            params = dict(pruned.named_parameters())
            with torch.no_grad():
                for name, m in mask.items():
                    params[name].mul_(m)
        total = sum(v["filters"] for v in plan.layers.values())
        kept = sum(v["kept"] for v in plan.layers.values())
        report: dict[str, Any] = {
            "rate": settings.rate, "training": trained.to_dict(), "residual": "mask",
            "layers": plan.layers, "kept_filters": kept, "total_filters": total, "pruned_fraction": 1 - kept / total,
            "removed_filters": sum(v["filters"] - v["kept"] for v in plan.layers.values() if v["how"] == "removed"),
            "masked_filters": sum(v["filters"] - v["kept"] for v in plan.layers.values() if v["how"] == "masked"),
        }
        return PruneOutcome(pruned, mask, report, plan.edit)


def _live_filters(weight: torch.Tensor, keep: list[int]) -> bool:
    """Whether any filter outside `keep` has a non-zero weight."""
    gone = [i for i in range(weight.shape[0]) if i not in set(keep)]
    return bool(gone) and bool(weight.detach()[gone].abs().sum() > 0)
