"""Layer-level cuts on a working copy: keep some output or input channels of a conv, BN or Linear."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import TypeVar

import torch
from torch import nn

from prunectl.errors import BadValueError
from prunectl.models.layers import ChannelSelection

M = TypeVar("M", bound=nn.Module)


def shared_copy(model: M) -> M:
    """A copy of `model`'s modules that shares its tensors: cheap, and safe as long as the cuts below replace
    tensors instead of writing into them (so the original model is never modified)."""
    memo = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    return copy.deepcopy(model, memo)


def _replace(module: nn.Module, name: str, tensor: torch.Tensor) -> None:
    if isinstance(getattr(module, name), nn.Parameter):
        old = getattr(module, name)
        setattr(module, name, nn.Parameter(tensor, requires_grad=old.requires_grad))
    else:
        setattr(module, name, tensor)


def keep_outputs(module: nn.Module, kept: Sequence[int]) -> None:
    """Keep output channels `kept` of a Conv2d / Linear / BatchNorm (weight rows, bias, running statistics)."""
    index = torch.tensor(list(kept), dtype=torch.long)
    for name, tensor in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]:
        if tensor is not None and tensor.dim() >= 1:
            _replace(module, name, tensor.detach().index_select(0, index.to(tensor.device)))
    if isinstance(module, nn.Conv2d):
        if module.groups != 1:
            raise BadValueError(f"cutting the outputs of a grouped conv ({module}) is not supported")
        module.out_channels = len(kept)
    elif isinstance(module, nn.Linear):
        module.out_features = len(kept)
    elif isinstance(module, nn.modules.batchnorm._BatchNorm):
        module.num_features = len(kept)
    else:
        raise BadValueError(f"cannot cut the outputs of a {type(module).__name__} layer")


def keep_inputs(module: nn.Module, kept: Sequence[int]) -> None:
    """Keep input features `kept` (dim 1 of the weight) of a Conv2d / Linear."""
    if not isinstance(module, nn.Conv2d | nn.Linear) or (isinstance(module, nn.Conv2d) and module.groups != 1):
        raise BadValueError(f"cannot cut the inputs of {module} (only plain convs and linear layers)")
    weight = module.weight.detach()
    _replace(module, "weight", weight.index_select(1, torch.tensor(list(kept), device=weight.device)))
    if isinstance(module, nn.Conv2d):
        module.in_channels = len(kept)
    else:
        module.in_features = len(kept)


def reselect(selection: ChannelSelection, kept: Sequence[int]) -> None:
    """Make `selection` pass exactly the tensor channels `kept`."""
    indexes = torch.zeros_like(selection.indexes)
    indexes[list(kept)] = 1.0
    selection.indexes = indexes
