"""Per-channel scores read from a group's layers (the criteria of L1-norm and Network Slimming), and top-k."""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from prunectl.errors import BadValueError
from prunectl.structure.groups import ChannelGroup


def filter_l1_norms(model: nn.Module, group: ChannelGroup) -> torch.Tensor:
    """Sum of |w| of each output filter of the group's conv (Li et al. 2017)."""
    if group.kind != "conv" or group.conv is None:
        raise BadValueError(f"channel group '{group.name}' has no conv filters to score")
    weight = cast(nn.Conv2d, model.get_submodule(group.conv)).weight.detach()
    return weight.abs().flatten(1).sum(1).float().cpu()


def bn_scales(model: nn.Module, group: ChannelGroup) -> torch.Tensor:
    """|gamma| of the group's BN, one per group channel (Network Slimming's score)."""
    if group.bn is None:
        raise BadValueError(f"channel group '{group.name}' has no BatchNorm scale to score")
    gamma = cast(nn.BatchNorm2d, model.get_submodule(group.bn)).weight.detach().abs().float().cpu()
    return gamma[[group.norm_index(c) for c in range(group.channels)]]


def top_indices(scores: torch.Tensor, count: int) -> list[int]:
    """Sorted indices of the `count` highest scores (ties go to the lower index).

    >>> top_indices(torch.tensor([1.0, 3.0, 3.0, 2.0]), 2)
    [1, 2]
    """
    order = torch.argsort(scores, descending=True, stable=True)[:count]
    return sorted(int(i) for i in order)
