"""ThiNet (Luo, Wu, Lin, ICCV 2017; TPAMI 2018): prune a layer's filters by how well the next layer's sampled output
is rebuilt from the remaining channels, then scale the kept channels by least squares.

For each pruned layer the sampler gives, at random (image, position, output channel f) samples, the contribution
x_c = sum_k W_next[f, c, k] * patch[c, k] of each input channel c of the next conv, and the target y = sum_c x_c (the
next conv's output minus its bias). Everything below works on the Gram matrix G = XᵀX and b = Xᵀy (C x C), so the
cost does not grow with the number of samples after they are reduced.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from prunectl.core.spec import Spec, check, helptext
from prunectl.errors import BadValueError
from prunectl.methods.base import Method, MethodFacts, PruneContext, PruneOutcome, register_method
from prunectl.methods.layerwise import (
    Note,
    Step,
    chosen_layers,
    finetuner,
    gram_solve,
    kept_count,
    prune_layers,
    reference,
)
from prunectl.methods.sampling import Samples, consumer_conv, default_draw, sample
from prunectl.models import ArchModel
from prunectl.structure import ChannelGroup, require

SELECTIONS = ("greedy", "forward")


@dataclass(frozen=True)
class ThiNetSettings(Spec):
    ratio: float = helptext("fraction of each pruned layer's channels KEPT (the paper's r; keeps int(C x r))",
                            default=0.5)
    layer_ratios: Mapping[str, float] = helptext("per-layer kept fractions {name: r}, overriding `ratio`",
                                                 default_factory=dict)
    layers: tuple[str, ...] = helptext(
        "channel groups to prune, front to back (default: VGG-16 conv1_1..conv4_3, other VGGs every conv read by a "
        "conv, ResNet-50 conv1 and conv2 of each bottleneck, CIFAR ResNets each basic block's first conv)",
        default=())
    selection: str = helptext("greedy: the ICCV rule (remove the channel whose removal keeps the summed removed "
                              "contribution smallest); forward: the TPAMI forward selection with least-squares "
                              "refits", default="greedy")
    scale: bool = helptext("fold a least-squares scale per kept channel into the next conv", default=True)
    sample_images: int | None = helptext("images drawn from the train split (default: 500; 10 per class for "
                                         "ImageNet-like data)", default=None)
    sample_positions: int | None = helptext("random output positions per image (default 10)", default=None)
    seed: int = helptext("seed of the image and position draw", default=0)
    finetune_steps: int = helptext(
        "SGD steps of fine-tuning after each pruned layer (0: none; the paper fine-tunes 1-2 epochs per layer, "
        "10k Caffe iterations at lr 1e-3 for VGG-16, see docs/methods.md)", default=0)
    finetune_lr: float = helptext("learning rate of the fine-tune between layers", default=1e-3)

    def __post_init__(self) -> None:
        object.__setattr__(self, "layer_ratios", dict(self.layer_ratios))
        object.__setattr__(self, "layers", tuple(str(n) for n in self.layers))
        for name, r in [("ratio", self.ratio), *((f"layer_ratios['{k}']", v) for k, v in self.layer_ratios.items())]:
            check(isinstance(r, int | float) and not isinstance(r, bool) and 0 < r <= 1,
                  f"thinet: {name} is the fraction kept and must be in (0, 1], got {r!r}")
        check(self.selection in SELECTIONS, f"thinet: selection must be one of {', '.join(SELECTIONS)}, "
                                            f"got {self.selection!r}")
        check(self.sample_images is None or self.sample_images >= 1, "thinet: sample_images must be >= 1")
        check(self.sample_positions is None or self.sample_positions >= 1, "thinet: sample_positions must be >= 1")
        check(self.finetune_steps >= 0, "thinet: finetune_steps must be >= 0")
        check(self.finetune_lr > 0, "thinet: finetune_lr must be > 0")


def contributions(samples: Samples, weight: torch.Tensor, seed: int) -> torch.Tensor:
    """X (samples, C): each input channel's contribution to one random output channel per sample, as ThiNet's
    `get_index` draws (image, position, channel)."""
    assert samples.patches is not None
    n = len(samples.patches)
    gen = torch.Generator().manual_seed(seed)
    f = torch.randint(weight.shape[0], (n,), generator=gen).to(weight.device)
    w = weight.reshape(weight.shape[0], weight.shape[1], -1).float()
    out = torch.empty(n, weight.shape[1], device=weight.device)
    for start in range(0, n, 1024):  # bounded: 1024 x C x k^2 at a time
        rows = slice(start, start + 1024)
        out[rows] = torch.einsum("sck,sck->sc", samples.patches[rows], w[f[rows]])
    return out


def greedy_removal(gram: torch.Tensor, remove: int) -> list[int]:
    """The ICCV rule: repeatedly remove the channel j minimising ||acc + x_j||^2 (acc: the summed contribution of
    the channels removed so far), vectorised as ||acc||^2 + 2 accᵀx_j + ||x_j||^2 over all j. Returns the removed."""
    c = gram.shape[0]
    removed: list[int] = []
    cross = torch.zeros(c, dtype=gram.dtype)  # accᵀ x_j for every j
    acc_sq = torch.zeros((), dtype=gram.dtype)
    free = torch.ones(c, dtype=torch.bool)
    diag = torch.diagonal(gram)
    for _ in range(remove):
        cost = acc_sq + 2 * cross + diag
        cost[~free] = torch.inf
        j = int(torch.argmin(cost))  # ties: the lowest index
        removed.append(j)
        acc_sq = cost[j]
        cross = cross + gram[j]
        free[j] = False
    return removed


def forward_selection(gram: torch.Tensor, rhs: torch.Tensor, keep: int, note: Note, what: str) -> list[int]:
    """The TPAMI rule: repeatedly add the channel j minimising ||ρ − (x_jᵀρ / x_jᵀx_j) x_j|| (ρ: the residual of
    the least-squares fit on the channels chosen so far), i.e. maximising (x_jᵀρ)^2 / ||x_j||^2. A channel with
    ||x_j|| = 0 can remove nothing, so it is chosen last (the original divides 0 by 0 here)."""
    diag = torch.diagonal(gram)
    chosen: list[int] = []
    w = torch.zeros(0, dtype=gram.dtype)
    for _ in range(keep):
        corr = rhs - (gram[:, chosen] @ w if chosen else 0)  # x_jᵀρ for every j
        gain = torch.where(diag > 0, corr**2 / diag.clamp_min(1e-300), torch.full_like(diag, -1.0))
        gain[chosen] = -torch.inf
        j = int(torch.argmax(gain))
        chosen.append(j)
        idx = torch.tensor(chosen)
        w = gram_solve(gram[idx][:, idx], rhs[idx], what, note)
    return sorted(chosen)


def scales(gram: torch.Tensor, rhs: torch.Tensor, kept: list[int], note: Note, what: str) -> torch.Tensor:
    """w = (X_SᵀX_S)⁻¹ X_Sᵀ y, one scale per kept channel (ridge where singular; a dead kept channel gets 0)."""
    idx = torch.tensor(kept)
    return gram_solve(gram[idx][:, idx], rhs[idx], what, note)


def relative_error(gram: torch.Tensor, rhs: torch.Tensor, yy: torch.Tensor, kept: list[int],
                   w: torch.Tensor) -> float:
    """||y − X_S w|| / ||y|| from the Gram form."""
    idx = torch.tensor(kept)
    err = yy - 2 * w @ rhs[idx] + w @ gram[idx][:, idx] @ w
    return float(err.clamp_min(0).sqrt() / yy.clamp_min(1e-300).sqrt())


def choose(gram: torch.Tensor, rhs: torch.Tensor, keep: int, selection: str, note: Note, what: str) -> list[int]:
    """The kept channels (sorted) under the ICCV greedy removal or the TPAMI forward selection."""
    c = gram.shape[0]
    if keep >= c:
        return list(range(c))
    if selection == "greedy":
        removed = set(greedy_removal(gram, c - keep))
        return [j for j in range(c) if j not in removed]
    return forward_selection(gram, rhs, keep, note, what)


@register_method
class ThiNet(Method):
    """ThiNet: channels chosen by reconstructing the next layer's sampled output, kept channels rescaled.

    >>> from prunectl.methods import get_method
    >>> get_method("thinet").settings(ratio=0.3).ratio
    0.3
    """

    facts = MethodFacts(
        name="thinet", structured=True, needs_data=True,
        summary="ThiNet: keep the channels that best rebuild the next layer's sampled output, rescaled by LS",
        citation="Luo, Wu, Lin, ThiNet: A Filter Level Pruning Method for Deep Neural Network Compression, "
                 "ICCV 2017 (TPAMI 2018)")
    settings = ThiNetSettings

    def prune(self, model: ArchModel, settings: ThiNetSettings, context: PruneContext) -> PruneOutcome:
        require(model, "channel-groups", method="thinet")
        if context.data is None:
            raise BadValueError("thinet samples activations and needs the training data")
        data = context.data
        groups = chosen_layers(model, settings.layers, "thinet")
        unknown = [n for n in settings.layer_ratios if n not in {g.name for g in groups}]
        if unknown:
            raise BadValueError(f"thinet: layer_ratios names '{unknown[0]}', not one of the pruned layers "
                                f"({', '.join(g.name for g in groups[:8])})")
        widths = {g.name: kept_count(g.channels, settings.layer_ratios.get(g.name, settings.ratio)) for g in groups}
        draw = default_draw(data, settings.sample_images, settings.sample_positions, settings.seed)

        def step(current: ArchModel, group: ChannelGroup, consumer: str, keep: int) -> Step:
            (samples,) = sample([(current, consumer, True)], data, draw,
                                explicit_positions=settings.sample_positions is not None, note=context.note)
            weight = consumer_conv(current, consumer).weight.detach()
            x = contributions(samples, weight, settings.seed).double()
            gram, y = x.T @ x, x.sum(1)
            rhs, yy = x.T @ y, y @ y
            what = f"thinet {group.name}"
            kept = choose(gram, rhs, keep, settings.selection, context.note, what)
            ones = torch.ones(len(kept), dtype=gram.dtype)
            w = scales(gram, rhs, kept, context.note, what) if settings.scale else ones
            new = weight[:, kept] * w.to(weight)[None, :, None, None]
            return Step(kept, new, None, {
                "samples": len(x), "rel_error_unscaled": relative_error(gram, rhs, yy, kept, ones),
                "rel_error": relative_error(gram, rhs, yy, kept, w)})

        between = finetuner(data, settings.finetune_steps, settings.finetune_lr, settings.seed)
        tag = f"{model.arch_name or model.family}-thinet-{settings.ratio}"
        pruned, edit, layers = prune_layers(model, groups, widths, step, name=tag, between=between)
        ref = None if between else reference(model, edit, pruned, [f["consumer"] for f in layers])
        report: dict[str, Any] = {"widths": {n: len(v) for n, v in edit.keep.items()}, "layers": layers,
                                  "samples": draw.images * draw.positions}
        return PruneOutcome(pruned, None, report, edit, reference=ref)
