"""Measured inference latency: FLOPs dropping does not make a network faster by itself, so we time the forward pass.

Method: eval mode under `torch.inference_mode`, a few warm-up passes (allocator, cuDNN autotuning, lazy kernel
loading), then the median of `repeats` timed passes on random input of the model's input size; on CUDA the device
is synchronised before and after every timed pass, so the time is the kernels' and not the launch's. The median is
robust to the odd preempted pass on a shared machine; the minimum is kept too (the best the hardware did).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from prunectl.core.spec import helptext
from prunectl.errors import BadValueError


@dataclass(frozen=True)
class LatencySettings:
    """How latency is measured (the defaults are the prune stage's: cheap, batch 1)."""

    batch_sizes: tuple[int, ...] = helptext("Batch sizes to time (one row each).", default=(1,))
    warmup: int = helptext("Untimed forward passes first.", default=2)
    repeats: int = helptext("Timed forward passes; the median is reported.", default=5)

    def __post_init__(self) -> None:
        if not self.batch_sizes or any(isinstance(b, bool) or not isinstance(b, int) or b < 1
                                       for b in self.batch_sizes):
            raise BadValueError(f"batch sizes must be positive integers, got {list(self.batch_sizes)}")
        if self.warmup < 0 or self.repeats < 1:
            raise BadValueError(f"latency needs warmup >= 0 and repeats >= 1, got {self.warmup} and {self.repeats}")


PRUNE_LATENCY = LatencySettings()                                   # recorded by every prune stage
INFO_LATENCY = LatencySettings(batch_sizes=(1, 16, 64), warmup=3, repeats=10)  # `info --latency`


def parse_batch_sizes(text: str) -> tuple[int, ...]:
    """`"1,16,64"` → (1, 16, 64); anything else is a one-line error.

    >>> parse_batch_sizes("1, 16,64")
    (1, 16, 64)
    """
    try:
        sizes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise BadValueError(f"--batch-sizes takes comma-separated integers, e.g. 1,16,64; got '{text}'") from None
    LatencySettings(batch_sizes=sizes)
    return sizes


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(model: torch.nn.Module, input_size: Sequence[int], settings: LatencySettings = PRUNE_LATENCY,
            device: torch.device | str = "cpu") -> dict[str, Any]:
    """Time `model`'s forward pass per batch size on `device`; the model comes back in its mode and on its device.

    Returns {"device", "threads", "warmup", "repeats", "rows": [{"batch", "median_ms", "min_ms",
    "per_image_ms"}]} — plain JSON, as a result.json records it.
    """
    device = torch.device(device)
    first = next(model.parameters(), None)
    home = first.device if first is not None else torch.device("cpu")
    was_training = model.training
    model.to(device).eval()
    rows = []
    try:
        with torch.inference_mode():
            for batch in settings.batch_sizes:
                x = torch.randn(batch, *input_size, device=device)
                for _ in range(settings.warmup):
                    model(x)
                times = []
                for _ in range(settings.repeats):
                    _sync(device)
                    start = time.perf_counter()
                    model(x)
                    _sync(device)
                    times.append(time.perf_counter() - start)
                median = 1000 * statistics.median(times)
                rows.append({"batch": batch, "median_ms": round(median, 6), "min_ms": round(1000 * min(times), 6),
                             "per_image_ms": round(median / batch, 6)})
    finally:
        model.to(home).train(was_training)
    return {"device": str(device), "threads": torch.get_num_threads() if device.type == "cpu" else None,
            "warmup": settings.warmup, "repeats": settings.repeats, "rows": rows}


def before_after(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """The prune stage's record: both measurements and the speed-up at each batch size (before / after)."""
    speedup = {str(b["batch"]): round(b["median_ms"] / max(a["median_ms"], 1e-9), 3)
               for b, a in zip(before["rows"], after["rows"], strict=True)}
    return {"before": before, "after": after, "speedup": speedup}


__all__ = ["INFO_LATENCY", "PRUNE_LATENCY", "LatencySettings", "before_after", "measure", "parse_batch_sizes"]
