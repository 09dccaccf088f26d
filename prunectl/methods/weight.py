"""Weight-level magnitude pruning (Han et al. 2015): one global threshold over conv (optionally linear) weights."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from prunectl.core.spec import Spec, check, helptext
from prunectl.errors import BadValueError
from prunectl.methods.base import Method, MethodFacts, PruneContext, PruneOutcome, register_method
from prunectl.models import ArchModel
from prunectl.structure import offers


@dataclass(frozen=True)
class WeightSettings(Spec):
    ratio: float = helptext("fraction of the (remaining) prunable weights to remove, e.g. 0.3 or 0.6", default=0.5)
    include_linear: bool = helptext("prune linear layers' weights too (default: conv only, as the paper)",
                                    default=False)

    def __post_init__(self) -> None:
        check(0 < self.ratio < 1, f"ratio must be in (0, 1), got {self.ratio}")


def prunable_weights(model: nn.Module, include_linear: bool) -> dict[str, torch.Tensor]:
    """Parameter name → weight of every conv (and, if asked, linear) layer; BN and biases are never pruned."""
    kinds = (nn.Conv2d, nn.Linear) if include_linear else (nn.Conv2d,)
    return {f"{name}.weight": m.weight for name, m in model.named_modules() if isinstance(m, kinds)}


def global_magnitude_mask(weights: Mapping[str, torch.Tensor], ratio: float,
                          prior: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Remove exactly round(ratio × alive) of the alive weights, smallest |w| first, over all layers together.

    `prior` (a mask from an earlier round) marks weights already removed: they stay removed and are not counted.

    >>> w = {"a": torch.tensor([0.1, -3.0, 0.5]), "b": torch.tensor([2.0, -0.2])}
    >>> {k: v.tolist() for k, v in global_magnitude_mask(w, 0.4).items()}
    {'a': [0.0, 1.0, 1.0], 'b': [1.0, 0.0]}
    """
    names = list(weights)
    scores = torch.cat([weights[n].detach().abs().flatten().float() for n in names])
    alive = torch.cat([(prior[n] if prior and n in prior else torch.ones_like(weights[n])).flatten().bool()
                       for n in names])
    n_remove = int(round(ratio * int(alive.sum())))
    scores = torch.where(alive, scores, torch.full_like(scores, float("-inf")))
    order = torch.argsort(scores, stable=True)
    already = int((~alive).sum())
    keep = alive.clone()
    keep[order[already:already + n_remove]] = False
    masks, start = {}, 0
    for n in names:
        size = weights[n].numel()
        masks[n] = keep[start:start + size].view_as(weights[n]).to(weights[n].dtype)
        start += size
    return masks


def masked_copy(model: ArchModel, include_linear: bool, missing: str,
                make_mask: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]],
                ) -> tuple[ArchModel, dict[str, torch.Tensor], int, int]:
    """A copy of `model` whose prunable weights are multiplied by `make_mask(weights)`; returns the copy, the
    mask, and how many prunable weights there are and stay. `missing` ends the error for a model without any."""
    if not (offers(model, "conv-weights") or (include_linear and offers(model, "linear-weights"))):
        raise BadValueError(f"{model.to_arch().name or model.to_arch().family} has no conv layers {missing}")
    pruned = copy.deepcopy(model)
    weights = prunable_weights(pruned, include_linear)
    mask = make_mask(weights)
    with torch.no_grad():
        for name, m in mask.items():
            weights[name].mul_(m)
    return pruned, mask, sum(m.numel() for m in mask.values()), sum(int(m.sum()) for m in mask.values())


@register_method
class WeightMagnitude(Method):
    """Unstructured pruning: zero the smallest-magnitude weights under one global threshold.

    The result keeps every shape; the mask is saved with the run and kept applied in fine-tuning and scratch
    training. With `context.mask` (lottery rounds), `ratio` is a fraction of the weights still alive.
    """

    facts = MethodFacts(
        name="weight", structured=False, per_seed_architecture=True,
        summary="weight-level magnitude pruning: one global threshold over conv weights, kept as a mask",
        citation="Han et al., Learning both Weights and Connections for Efficient Neural Networks, NeurIPS 2015",
        imagenet_finetune_epochs=10)
    settings = WeightSettings

    def prune(self, model: ArchModel, settings: WeightSettings, context: PruneContext) -> PruneOutcome:
        pruned, mask, total, kept = masked_copy(
            model, settings.include_linear, "to prune; add --include-linear to prune its linear layers",
            lambda weights: global_magnitude_mask(weights, settings.ratio, context.mask))
        report = {"prunable_weights": total, "kept_weights": kept, "sparsity": 1 - kept / total,
                  "layers": {n: round(float(m.mean()), 6) for n, m in mask.items()}}
        return PruneOutcome(pruned, mask, report)


@dataclass(frozen=True)
class FilterMaskSettings(Spec):
    ratio: float = helptext("fraction of each conv layer's remaining filters to mask, smallest L1 norm first",
                            default=0.2)

    def __post_init__(self) -> None:
        check(0 < self.ratio < 1, f"ratio must be in (0, 1), got {self.ratio}")


def filter_l1_mask(weight: torch.Tensor, ratio: float, prior: torch.Tensor | None = None) -> torch.Tensor:
    """Mask whole filters of one conv: remove round(ratio × alive filters) with the smallest L1 norms.

    >>> w = torch.stack([torch.full((1, 1, 1), v) for v in (3.0, 1.0, 2.0, 4.0)])
    >>> filter_l1_mask(w, 0.5).flatten().tolist()
    [1.0, 0.0, 0.0, 1.0]
    """
    alive = torch.ones(weight.shape[0], dtype=torch.bool) if prior is None else prior.flatten(1).any(1)
    scores = weight.detach().abs().flatten(1).sum(1).float()
    scores = torch.where(alive, scores, torch.full_like(scores, float("-inf")))
    n_remove = min(int(round(ratio * int(alive.sum()))), int(alive.sum()) - 1)  # never a whole layer
    order = torch.argsort(scores, stable=True)
    keep = alive.clone()
    keep[order[int((~alive).sum()):int((~alive).sum()) + n_remove]] = False
    return keep.to(weight.dtype).view(-1, *([1] * (weight.dim() - 1))).expand_as(weight).contiguous()


@register_method
class FilterMask(Method):
    """L1-norm filter pruning as a mask on the full-size network (the seed's structured lottery tickets):
    every conv layer masks `ratio` of its remaining filters, so whole filters are zero but shapes stay.
    """

    facts = MethodFacts(
        name="l1-mask", structured=False,
        summary="L1-norm filter masks on the full-size network (the structured lottery tickets)",
        citation="Li et al., ICLR 2017, as masks for Frankle & Carbin's lottery tickets (ICLR 2019)")
    settings = FilterMaskSettings

    def prune(self, model: ArchModel, settings: FilterMaskSettings, context: PruneContext) -> PruneOutcome:
        prior = context.mask or {}
        pruned, mask, total, kept = masked_copy(
            model, False, "to mask filters in; use unstructured (weight) pruning",
            lambda weights: {n: filter_l1_mask(w, settings.ratio, prior.get(n)) for n, w in weights.items()})
        filters = {n: int(m.flatten(1).any(1).sum()) for n, m in mask.items()}
        return PruneOutcome(pruned, mask, {"filters_kept": filters, "sparsity": 1 - kept / total})
