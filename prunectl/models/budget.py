"""An architecture's size, measured on the meta device (nothing allocated) and checked before it is built."""

from __future__ import annotations

from typing import Any

import torch

from prunectl.core import limits
from prunectl.errors import BadValueError, PrunectlError
from prunectl.models.base import FAMILIES, Arch, ArchModel


def meta_model(arch: Arch) -> ArchModel:
    """The network `arch` describes, with every tensor on the meta device; the global RNG is left untouched."""
    limits.check_arch_numbers(arch.num_classes, arch.input_size)
    family = FAMILIES.get(arch.family)
    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            return family(arch)
    except PrunectlError:
        raise
    except (TypeError, ValueError, KeyError, IndexError, RuntimeError, AttributeError) as err:
        raise BadValueError(f"architecture {arch.name or arch.family} cannot be built: {type(err).__name__}: "
                            f"{' '.join(str(err).split())[:200]}") from None


def activation_elements(model: torch.nn.Module, input_size: tuple[int, int, int]) -> int | None:
    """Elements of every leaf module's output for one example (a meta forward pass); None if it cannot run."""
    total = 0

    def count(_m: torch.nn.Module, _i: Any, out: Any) -> None:
        nonlocal total
        for t in out if isinstance(out, tuple | list) else (out,):
            if isinstance(t, torch.Tensor):
                total += t.numel()

    handles = [m.register_forward_hook(count) for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            model.eval()(torch.empty((1, *input_size), device="meta"))
    except (RuntimeError, NotImplementedError, TypeError, ValueError, IndexError):
        return None  # a layer without a meta kernel: the parameter count still bounds the model
    finally:
        for h in handles:
            h.remove()
    return total


def _activation_bound(model: torch.nn.Module, input_size: tuple[int, int, int]) -> int:
    """A quick over-estimate for the layers prunectl builds (none upsamples): every leaf's output at most the
    widest channel/feature count at the full input resolution."""
    leaves = [m for m in model.modules() if not list(m.children())]
    widths = [input_size[0]] + [v for m in leaves for name in ("out_channels", "out_features", "num_features")
                                if isinstance(v := getattr(m, name, None), int)]
    return len(leaves) * max(widths) * input_size[1] * input_size[2]


def check_size(arch: Arch) -> None:
    """Refuse (one-line BadValueError) an architecture whose parameters or activations exceed the limits."""
    lim = limits.current()
    model = meta_model(arch)
    name = arch.name or arch.family
    params = sum(t.numel() for t in model.parameters()) + sum(t.numel() for t in model.buffers())
    if params > lim.params:
        raise limits.exceeded(f"the parameter count of {name}", params, "params", lim.params)
    if _activation_bound(model, arch.input_size) <= lim.activations:
        return  # cheaply below the limit: no need for the meta forward pass
    acts = activation_elements(model, arch.input_size)
    if acts is not None and acts > lim.activations:
        raise limits.exceeded(f"the activation size of {name} (elements per example)", acts, "activations",
                              lim.activations)


__all__ = ["activation_elements", "check_size", "meta_model"]
