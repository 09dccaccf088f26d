"""The numerics of a run's steps: fp32 or bf16 autocast, and optional `torch.compile` (both recorded in the spec).

bf16 autocast runs convolutions and matrix products in bfloat16 while the parameters, their gradients and the
optimiser state stay fp32. bf16 has fp32's exponent range, so no loss scaling is needed and the gradients a
method's `after_backward` sees are the true (unscaled) fp32 gradients.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from prunectl.core.hparams import PRECISIONS

__all__ = ["COMPILE_BACKEND", "PRECISIONS", "autocast", "compiled"]
COMPILE_BACKEND = "inductor"  # torch.compile's default; tests swap in "eager" to skip code generation


def autocast(precision: str, device: torch.device) -> Callable[[], contextlib.AbstractContextManager[Any]]:
    """A factory of the context a forward pass runs in: bf16 autocast, or nothing for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext
    if precision == "bf16":
        return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    raise ValueError(f"unknown precision {precision!r}")  # TrainSpec checked it already


def compiled(module: nn.Module, enabled: bool) -> nn.Module:
    """`torch.compile(module)` when enabled (the first steps then pay for compilation), else `module`."""
    return torch.compile(module, backend=COMPILE_BACKEND) if enabled else module  # type: ignore[return-value]
