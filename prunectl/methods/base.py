"""What a pruning method is: its settings dataclass, its `prune()` step, and the method registry."""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from prunectl.core.hparams import MethodTraining
from prunectl.core.registry import Registry
from prunectl.core.spec import Spec
from prunectl.data import Dataset
from prunectl.errors import BadValueError
from prunectl.models import ArchModel
from prunectl.training.hooks import TrainingBehaviour


@dataclass
class PruneContext:
    """What a method may need besides the model: training data (data-driven methods such as ThiNet sample
    activations), the method the baseline was trained with (`training`: its name and training settings, None
    for a plain run), the mask of an already weight-pruned model (lottery rounds prune a fraction of what is
    left), and a sink for remarks that the CLI shows the user (e.g. "the per-layer floor bound in 3 layers")."""

    data: Dataset | None = None
    training: MethodTraining | None = None
    mask: Mapping[str, torch.Tensor] | None = None
    note: Callable[[str], None] = lambda message: None


@dataclass
class PruneOutcome:
    """A pruned model. Structured methods return a physically smaller dense network (and `mask` None);
    unstructured ones return the same shapes with pruned weights zeroed and the 0/1 `mask` (param name → tensor)
    that later training keeps applied. `report` holds JSON-serialisable facts (widths kept, threshold, ...)."""

    model: ArchModel
    mask: dict[str, torch.Tensor] | None = None
    report: dict[str, Any] = field(default_factory=dict)


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

    # -- acting during training (prunectl/training/hooks.py) ---------------------------------------------
    # A method that acts while the baseline trains (a penalty, masks renewed every few epochs, extra scale
    # parameters) sets `training_settings` to the frozen Spec dataclass of its training-time settings and
    # returns its behaviour from `training`; `train --method NAME --set KEY=VALUE` then trains with it.
    training_settings: ClassVar[type[Spec] | None] = None

    def training(self, settings: Any, model: ArchModel) -> TrainingBehaviour:
        """The behaviour that applies `settings` (a `training_settings` instance) while `model` trains."""
        raise BadValueError(f"method '{self.name}' does not act during training")


METHODS: Registry[type[Method]] = Registry("pruning method")


def register_method(cls: type[Method]) -> type[Method]:
    METHODS.add(cls.name, cls)
    return cls


def get_method(name: str) -> Method:
    """The method registered as `name` (an unknown name gets a did-you-mean error)."""
    return METHODS.get(name)()


def list_methods(pattern: str = "*") -> list[str]:
    return METHODS.names(pattern)
