"""Your own nn.Module through the Python API: prune, fine-tune and train from scratch like any prunectl model.

The model is recorded by its builder, `package.module:function` (called with keyword arguments), so a run can be
rebuilt locally; its pruning is recorded as kept channel indices, as for torchvision models. A builder runs code,
so it is only ever taken from your own code or command line: `module_arch` trusts the builder it is given for
this process, and a pulled or shared record naming one is refused unless you allow it explicitly
(`trust_builder("pkg.mod:fn")` or `PRUNECTL_TRUST_BUILDERS=pkg.mod:fn`).

>>> arch = module_arch("torchvision.models:resnet18", (3, 32, 32), num_classes=10,
...                    kwargs={"num_classes": 10})                             # doctest: +SKIP
>>> outcome = prune_module(arch, "l1-norm", {"ratio": 0.5})                    # doctest: +SKIP
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, cast

import torch
from torch import nn

from prunectl.errors import BadValueError
from prunectl.methods import PruneContext, PruneOutcome, get_method
from prunectl.models import Arch, ArchModel, build_model
from prunectl.models.external import TRUSTED_BUILDERS, layer_shapes, versions

_BUILDER = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def trust_builder(builder: str) -> None:
    """Allow records naming `builder` (`package.module:function`) to be built in this process."""
    if not _BUILDER.match(builder):
        raise BadValueError(f"a model builder is 'package.module:function', got '{builder}'")
    TRUSTED_BUILDERS.add(builder)


def module_arch(builder: str, input_size: tuple[int, int, int], num_classes: int,
                kwargs: Mapping[str, Any] | None = None) -> Arch:
    """The record of your model: `builder(**kwargs)` takes `input_size` inputs and gives `num_classes` scores.
    The builder comes from your own code, so it is trusted for this process."""
    trust_builder(builder)
    config = {"builder": builder, "kwargs": dict(kwargs or {}), "versions": versions("torch"), "edits": []}
    size = cast(tuple[int, int, int], tuple(input_size))
    return Arch("module", config, num_classes, size, name=builder)


def adopt(module: nn.Module, example_input: torch.Tensor, builder: str,
          kwargs: Mapping[str, Any] | None = None) -> ArchModel:
    """A prunectl model holding `module`'s current weights (`builder(**kwargs)` must build the same network:
    checked by the layer shapes), sized by `example_input` (one batch) and by the module's output on it."""
    with torch.no_grad():
        out = module.eval()(example_input)
    arch = module_arch(builder, tuple(example_input.shape[1:]), int(out.shape[-1]), kwargs)  # type: ignore[arg-type]
    model = build_model(arch)
    net = cast(nn.Module, model.net)
    if layer_shapes(net) != layer_shapes(module):
        raise BadValueError(f"the builder '{builder}' does not build the module given (its layer shapes differ)")
    net.load_state_dict(module.state_dict(), strict=True)
    return model


def prune_module(model: ArchModel | Arch, method: str, settings: Mapping[str, Any] | None = None,
                 context: PruneContext | None = None) -> PruneOutcome:
    """Prune your model (an `adopt`ed one, or a `module_arch` record, built afresh) with a registered method."""
    if isinstance(model, Arch):
        model = build_model(model)
    chosen = get_method(method)
    return chosen.prune(model, chosen.settings(**dict(settings or {})), context or PruneContext())


__all__ = ["adopt", "module_arch", "prune_module", "trust_builder"]
