"""What ThiNet and regression-based channel pruning share: which layers they prune, the layer-by-layer loop
(choose kept channels from samples, cut them with `apply_edit`, write the consumer's reconstructed weights), a
least-squares solve that says when it had to regularise, the full-size reference the pruned model equals, and the
optional short fine-tune between layers."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from prunectl.data import Dataset
from prunectl.errors import BadValueError
from prunectl.methods.sampling import consumer_conv
from prunectl.models import ArchModel
from prunectl.structure import ChannelGroup, StructureEdit, apply_edit, channel_groups, masked_model

Note = Callable[[str], None]
VGG16_CONVS = 13
VGG16_PRUNED = 10  # conv1_1 ... conv4_3: ThiNet's VGG-16 loop never touches conv5_x (Luo et al. 2017, run_this.sh)


@dataclass(frozen=True)
class Step:
    """One layer's result: the group's kept channels (group numbering), the consumer's new weight (out, kept
    inputs, kh, kw) and bias (None: keep the conv's), and JSON facts for the report."""

    kept: list[int]
    weight: torch.Tensor
    bias: torch.Tensor | None
    facts: dict[str, Any]


def reconstructable(group: ChannelGroup, model: nn.Module) -> str | None:
    """The group's single plain-conv consumer, or None where it has another kind (or several)."""
    if group.kind != "conv" or not group.prunable or len(group.consumers) != 1:
        return None
    consumer = group.consumers[0]
    layer = model.get_submodule(consumer.module)
    if consumer.selected is not None or consumer.offset or consumer.positions != 1:
        return None
    return consumer.module if isinstance(layer, nn.Conv2d) and layer.groups == 1 else None


def default_layers(model: ArchModel, method: str) -> list[str]:
    """Every prunable group read by one plain conv (VGG: each conv but the last; CIFAR ResNets: each basic block's
    first conv; ResNet-50: conv1 and conv2 of each bottleneck); a VGG-16 stops at conv4_3 as the papers do."""
    groups = [g for g in channel_groups(model) if g.kind == "conv"]
    names = [g.name for g in groups if reconstructable(g, model)]
    if model.family in ("cifar_vgg", "imagenet_vgg") and len(groups) == VGG16_CONVS:
        names = [g.name for g in groups[:VGG16_PRUNED] if g.name in names]
    if not names:
        raise BadValueError(f"{method}: this {model.family} has no prunable layer read by a plain conv")
    return names


def chosen_layers(model: ArchModel, layers: Sequence[str], method: str) -> list[ChannelGroup]:
    """The groups named by `layers` (empty: the family default), front to back, each checked for a conv consumer."""
    groups = {g.name: g for g in channel_groups(model)}
    names = list(layers) or default_layers(model, method)
    for name in names:
        if name not in groups:
            shown = ", ".join(default_layers(model, method)[:8])
            raise BadValueError(f"{method}: no channel group '{name}' in this model (e.g. {shown})")
        if not reconstructable(groups[name], model):
            raise BadValueError(f"{method}: layer '{name}' has no plain-conv consumer to reconstruct (its readers: "
                                f"{', '.join(c.module for c in groups[name].consumers)})")
    order = list(groups)
    return [groups[n] for n in sorted(set(names), key=order.index)]


def kept_count(channels: int, ratio: float) -> int:
    """int(C x r), as ThiNet's code computes it (`goal_num = int(x.shape[1] * compress_rate)`), at least 1.
    A tiny epsilon keeps r = 0.7 of 10 at 7 despite 0.7 * 10 = 6.999... in binary."""
    return max(1, int(channels * ratio + 1e-9))


def least_squares(a: torch.Tensor, b: torch.Tensor, what: str, note: Note) -> torch.Tensor:
    """argmin_x ||a x - b||^2 via the normal equations in float64. A rank-deficient `a` (fewer samples than
    unknowns, or dependent columns) is solved with a small ridge (1e-6 x the mean diagonal), and `note` says so."""
    a64, b64 = a.double(), b.double()
    return gram_solve(a64.T @ a64, a64.T @ b64, what, note, rows=a.shape[0]).to(a.dtype)


def gram_solve(gram: torch.Tensor, rhs: torch.Tensor, what: str, note: Note, rows: int | None = None) -> torch.Tensor:
    """Solve gram x = rhs (gram = AᵀA, float64), with the ridge fallback of `least_squares`."""
    n = gram.shape[0]
    if n and (rows is None or rows >= n):
        factor, info = torch.linalg.cholesky_ex(gram)
        pivots = torch.diagonal(factor) ** 2 if int(info) == 0 else None
        # positive definite, and no pivot below 1e-10 of the largest diagonal entry (numerically full rank)
        if pivots is not None and float(pivots.min()) > 1e-10 * float(torch.diagonal(gram).max()):
            return torch.cholesky_solve(rhs.reshape(n, -1), factor).reshape(rhs.shape)
    ridge = 1e-6 * max(float(torch.diagonal(gram).mean()), 1e-12)
    why = f"{rows} samples for {n} unknowns" if rows is not None and rows < n else "rank-deficient samples"
    note(f"{what}: singular least-squares system ({why}); solved with ridge {ridge:.3g}")
    return torch.linalg.solve(gram + ridge * torch.eye(n, dtype=gram.dtype), rhs)


def set_consumer(model: nn.Module, name: str, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    layer = consumer_conv(model, name)
    with torch.no_grad():
        layer.weight.copy_(weight.to(layer.weight))
        if bias is not None:
            if layer.bias is None:
                raise BadValueError(f"layer '{name}' has no bias to refit")
            layer.bias.copy_(bias.to(layer.bias))


def prune_layers(model: ArchModel, groups: Sequence[ChannelGroup], widths: Mapping[str, int],
                 step: Callable[[ArchModel, ChannelGroup, str, int], Step], *, name: str,
                 between: Callable[[ArchModel], None] | None = None) -> tuple[ArchModel, StructureEdit, list[dict]]:
    """Prune `groups` front to back: `step(current, group, consumer, k)` picks k channels from the current (partly
    pruned) model and the consumer's reconstruction; the cut comes from `apply_edit`, then the consumer's weights
    are replaced. `between` runs after each layer (a short fine-tune). Returns the model, the edit on `model`
    (each group is cut once, from full width, so kept indices are in the input's numbering) and per-layer facts."""
    current, keep, facts = model, {}, []
    for group in groups:
        consumer = cast(str, reconstructable(group, current))
        result = step(current, group, consumer, widths[group.name])
        current = apply_edit(current, StructureEdit({group.name: result.kept}), name=name)
        set_consumer(current, consumer, result.weight, result.bias)
        keep[group.name] = result.kept
        facts.append({"layer": group.name, "consumer": consumer, "kept": len(result.kept),
                      "channels": group.channels, **result.facts})
        if between is not None:
            between(current)
    return current, StructureEdit(keep), facts


def reference(model: ArchModel, edit: StructureEdit, pruned: ArchModel, consumers: Sequence[str]) -> ArchModel:
    """The full-size model the pruned one equals: `masked_model(model, edit)` with each reconstructed consumer's
    final weights scattered back to their full-size places (zero at removed inputs and outputs)."""
    ref = masked_model(model, edit)
    groups = channel_groups(model)
    produced = {p: g for g in groups for p in g.producers}
    read = {c.module: (g, c) for g in groups for c in g.consumers if g.name in edit.keep}
    with torch.no_grad():
        for name in consumers:
            full, small = consumer_conv(ref, name), consumer_conv(pruned, name)
            out_group = produced.get(name)
            rows = list(edit.keep[out_group.name]) if out_group and out_group.name in edit.keep else \
                list(range(full.out_channels))
            group, consumer = read[name]
            cols = [i for c in edit.keep[group.name] for i in consumer.inputs(c)]
            weight = torch.zeros_like(full.weight)
            weight[torch.tensor(rows)[:, None], torch.tensor(cols)[None, :]] = small.weight
            full.weight.copy_(weight)
            if full.bias is not None and small.bias is not None:
                full.bias.zero_()
                full.bias[rows] = small.bias
    return ref


def finetuner(data: Dataset, steps: int, lr: float, seed: int) -> Callable[[ArchModel], None] | None:
    """A short SGD fine-tune (momentum 0.9, weight decay 5e-4 as in ThiNet's per-layer solver, batch 64, with the
    dataset's augmentation) run between layers; None for 0 steps."""
    if steps <= 0:
        return None
    calls = [0]

    def run(model: ArchModel) -> None:
        device = next(model.parameters()).device
        optim = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
        mode, done = model.training, 0
        model.train()
        while done < steps:
            for x, y in data.batches("train", 64, shuffle=True, augment=True, seed=seed + 7919 * calls[0] + done,
                                     device=device):
                optim.zero_grad(set_to_none=True)
                F.cross_entropy(model(x), y).backward()
                optim.step()
                done += 1
                if done >= steps:
                    break
        calls[0] += 1
        model.train(mode)
    return run
