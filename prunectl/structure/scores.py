"""Per-channel scores read from a group's layers (the criteria of L1-norm and Network Slimming), and top-k."""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from prunectl.errors import BadValueError
from prunectl.structure.groups import ChannelGroup


def filter_l1_norms(model: nn.Module, group: ChannelGroup) -> torch.Tensor:
    """Sum of |w| of each output filter of the group's conv (Li et al. 2017); for a group of coupled producers
    (a traced residual sum, a conv and its depthwise conv) the sum over all of them."""
    if group.kind != "conv" or not group.producers:
        raise BadValueError(f"channel group '{group.name}' has no conv filters to score")
    weights = [cast(nn.Conv2d, model.get_submodule(p)).weight.detach() for p in group.producers]
    return sum(w.abs().flatten(1).sum(1).float().cpu() for w in weights)  # type: ignore[return-value]


def bn_scales(model: nn.Module, group: ChannelGroup) -> torch.Tensor:
    """|gamma| of the group's BN, one per group channel (Network Slimming's score)."""
    if group.bn is None:
        raise BadValueError(f"channel group '{group.name}' has no BatchNorm scale to score")
    index = [group.norm_index(c) for c in range(group.channels)]
    offsets = group.meta.get("norm_offsets", {})
    # A traced group may hold several BNs (a residual stream, a depthwise conv's): their mean |gamma|.
    gammas = [cast(nn.BatchNorm2d, model.get_submodule(n)).weight.detach().abs().float().cpu()
              [[offsets.get(n, 0) + i for i in index]] for n in group.norms]
    return torch.stack(gammas).mean(0)


def top_indices(scores: torch.Tensor, count: int) -> list[int]:
    """Sorted indices of the `count` highest scores (ties go to the lower index).

    >>> top_indices(torch.tensor([1.0, 3.0, 3.0, 2.0]), 2)
    [1, 2]
    """
    order = torch.argsort(scores, descending=True, stable=True)[:count]
    return sorted(int(i) for i in order)
