"""FLOPs (fvcore multiply-adds of conv and linear layers) and parameter counts, dense or sparse-aware."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import torch

with warnings.catch_warnings():  # fvcore.nn scripts its focal loss at import; torch 2.14 deprecates jit.script
    warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
    from fvcore.nn import FlopCountAnalysis
from fvcore.nn.jit_handles import (  # noqa: E402
    addmm_flop_jit,
    bmm_flop_jit,
    conv_flop_jit,
    einsum_flop_jit,
    linear_flop_jit,
    matmul_flop_jit,
)
from torch import nn

FLOPS_LABEL = "FLOPs (multiply-adds)"
# fvcore counts one multiply-add as one flop; we keep only the ops that carry weights (docs/flops.md). The handles
# are set from scratch because fvcore's `set_op_handle(op, None)` does not remove a default handle.
_COUNTED_OPS = {
    "aten::_convolution": conv_flop_jit, "aten::addmm": addmm_flop_jit, "aten::linear": linear_flop_jit,
    "aten::matmul": matmul_flop_jit, "aten::mm": matmul_flop_jit, "aten::bmm": bmm_flop_jit,
    "aten::einsum": einsum_flop_jit,
}


@dataclass(frozen=True)
class LayerCount:
    name: str
    kind: str
    shape: str
    params: int
    flops: int
    density: float = 1.0


@dataclass(frozen=True)
class Counts:
    """Whole-model figures plus one row per conv/linear layer."""

    params: int
    flops: int
    layers: tuple[LayerCount, ...]
    dense_params: int
    dense_flops: int

    def as_dict(self) -> dict[str, int]:
        return {"params": self.params, "flops": self.flops,
                "dense_params": self.dense_params, "dense_flops": self.dense_flops}


def _shape(module: nn.Module) -> str:
    if isinstance(module, nn.Conv2d):
        k = "x".join(map(str, module.kernel_size))
        return f"{module.in_channels}→{module.out_channels} {k}/{module.stride[0]}"
    if isinstance(module, nn.Linear):
        return f"{module.in_features}→{module.out_features}"
    return ""


def count(model: nn.Module, input_size: tuple[int, ...],
          masks: Mapping[str, torch.Tensor] | None = None) -> Counts:
    """Count `model` at batch size 1. With `masks` (param name → 0/1), each masked layer's FLOPs and params are
    scaled by its weight density: the sparse count that scratch-B budgets of weight-level pruning use.

    >>> from prunectl.models import create_model
    >>> count(create_model("lenet300100"), (1, 28, 28)).flops
    266200
    """
    masks = masks or {}
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    x = torch.zeros(1, *input_size, device=device)
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    with torch.no_grad():
        analysis = FlopCountAnalysis(model, x)
        analysis.clear_op_handles().set_op_handle(**_COUNTED_OPS)
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
        by_module = analysis.by_module()
    model.train(was_training)

    layers, flops, params = [], 0, 0
    covered: set[str] = set()
    for name, module in model.named_modules():
        if not isinstance(module, nn.Conv2d | nn.Linear):
            continue
        density = 1.0
        if f"{name}.weight" in masks:
            density = float(masks[f"{name}.weight"].float().mean())
        n_params = sum(p.numel() for p in module.parameters(recurse=False))
        weight = module.weight.numel()
        layer_params = round(weight * density) + (n_params - weight)
        layer_flops = round(by_module.get(name, 0) * density)
        layers.append(LayerCount(name, type(module).__name__, _shape(module), layer_params, layer_flops, density))
        flops += layer_flops
        params += layer_params
        covered |= {f"{name}.weight", f"{name}.bias"}
    dense_params = sum(p.numel() for p in model.parameters())
    other_params = sum(p.numel() for n, p in model.named_parameters() if n not in covered)
    return Counts(params=params + other_params, flops=flops, layers=tuple(layers),
                  dense_params=dense_params, dense_flops=int(by_module.get("", 0)))
