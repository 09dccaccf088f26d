"""What a pruning method is: its settings dataclass, its `prune()` step, and the method registry."""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from prunectl.core.registry import Registry
from prunectl.core.spec import Spec
from prunectl.data import Dataset
from prunectl.models import ArchModel
from prunectl.structure import StructureEdit


@dataclass
class PruneContext:
    """What a method may need besides the model: training data (data-driven methods such as ThiNet sample
    activations), the Network Slimming penalty the baseline was trained with, the mask of an already
    weight-pruned model (lottery rounds prune a fraction of what is left), and a sink for remarks that the CLI
    shows the user (e.g. "the per-layer floor bound in 3 layers")."""

    data: Dataset | None = None
    trained_sparsity: float = 0.0
    mask: Mapping[str, torch.Tensor] | None = None
    note: Callable[[str], None] = lambda message: None


@dataclass
class PruneOutcome:
    """A pruned model. Structured methods return a physically smaller dense network (and `mask` None);
    unstructured ones return the same shapes with pruned weights zeroed and the 0/1 `mask` (param name → tensor)
    that later training keeps applied. `report` holds JSON-serialisable facts (widths kept, threshold, ...).
    Structured methods also give the `edit` they applied to the input model (`prunectl.structure.apply_edit(
    input, edit)` is `model` up to the method's own weight changes), so `masked_model(input, edit)` is the
    full-size reference the pruned model is checked against."""

    model: ArchModel
    mask: dict[str, torch.Tensor] | None = None
    report: dict[str, Any] = field(default_factory=dict)
    edit: StructureEdit | None = None


class Method(abc.ABC):
    """A pruning method. Subclasses set `name`, `structured`, `settings` (their own frozen `Spec` dataclass)
    and implement `prune`, which must not modify its input model.

    >>> from prunectl.methods import get_method
    >>> method = get_method("weight")
    >>> outcome = method.prune(model, method.settings(ratio=0.5), PruneContext())   # doctest: +SKIP
    """

    name: ClassVar[str]
    structured: ClassVar[bool]
    settings: ClassVar[type[Spec]]
    summary: ClassVar[str] = ""

    @abc.abstractmethod
    def prune(self, model: ArchModel, settings: Any, context: PruneContext) -> PruneOutcome:
        """Return the pruned model (a new module; `model` is left as it was)."""


METHODS: Registry[type[Method]] = Registry("pruning method")


def register_method(cls: type[Method]) -> type[Method]:
    METHODS.add(cls.name, cls)
    return cls


def get_method(name: str) -> Method:
    """The method registered as `name` (an unknown name gets a did-you-mean error)."""
    return METHODS.get(name)()


def list_methods(pattern: str = "*") -> list[str]:
    return METHODS.names(pattern)
