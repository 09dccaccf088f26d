"""What a pruning method is: its facts, its settings dataclass, its `prune()` step, and the method registry."""

from __future__ import annotations

import abc
import dataclasses
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
from prunectl.structure import StructureEdit
from prunectl.training.hooks import TrainingBehaviour


@dataclass(frozen=True)
class MethodFacts:
    """What the protocol, the zoo and `prunectl methods` need to know about a method, stated once on its class.

    The ImageNet numbers follow the Rethinking paper's experiments (Liu et al., ICLR 2019, and its released code;
    see docs/scratch-budgets.md): fine-tuning epochs per method, and whether scratch-B is capped (FLOPs ratio ≥ 2
    → twice the baseline's epochs, else int(epochs × ratio)) or plain int(epochs × ratio). CIFAR-style data use
    the protocol's numbers for every method.
    """

    name: str
    structured: bool  # True: a physically smaller dense network; False: a mask on the full-size one
    summary: str  # one line for `prunectl methods`
    citation: str  # the paper that defines the method
    needs_data: bool = False  # prune() reads training data (e.g. sampled activations)
    trains: bool = False  # the method acts during training, not only in prune() (e.g. a penalty)
    # The pruned architecture depends on the trained weights (one global threshold, a penalty driving scales to 0),
    # so each seed's network has its own widths or depth: `compare` shows params/FLOPs as mean and range.
    per_seed_architecture: bool = False
    imagenet_finetune_epochs: int | None = None  # None: the ImageNet protocol's default
    imagenet_scratch_b_capped: bool = False  # ImageNet scratch-B: FLOPs ratio ≥ 2 → 2 × epochs

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


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
    that later training keeps applied. `report` holds JSON-serialisable facts (widths kept, threshold, ...).
    Structured methods also give the `edit` they applied to the input model (`prunectl.structure.apply_edit(
    input, edit)` is `model` up to the method's own weight changes), so `masked_model(input, edit)` is the
    full-size reference the pruned model is checked against. A method that also changes weights it keeps (the
    reconstruction methods rewrite the next layer of each pruned one) gives that reference itself in `reference`:
    the full-size model with its weight changes applied, whose function `model` equals."""

    model: ArchModel
    mask: dict[str, torch.Tensor] | None = None
    report: dict[str, Any] = field(default_factory=dict)
    edit: StructureEdit | None = None
    reference: ArchModel | None = None


class Method(abc.ABC):
    """A pruning method. Subclasses set `facts` (a `MethodFacts`), `settings` (their own frozen `Spec` dataclass)
    and implement `prune`, which must not modify its input model. `name`, `structured` and `summary` are read
    from `facts` (set on the class when it is defined), so they are never written twice.

    >>> from prunectl.methods import get_method
    >>> method = get_method("weight")
    >>> outcome = method.prune(model, method.settings(ratio=0.5), PruneContext())   # doctest: +SKIP
    """

    facts: ClassVar[MethodFacts]
    name: ClassVar[str]  # facts.name
    structured: ClassVar[bool]  # facts.structured
    summary: ClassVar[str]  # facts.summary
    settings: ClassVar[type[Spec]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        facts = cls.__dict__.get("facts")
        if facts is not None:
            cls.name, cls.structured, cls.summary = facts.name, facts.structured, facts.summary

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
    if not isinstance(cls.__dict__.get("facts"), MethodFacts):
        raise TypeError(f"{cls.__name__} needs a `facts = MethodFacts(...)` class attribute")
    if cls.facts.trains != (cls.training_settings is not None):  # `prunectl methods` must tell the truth
        raise TypeError(f"{cls.__name__}: facts.trains must be True exactly when it sets training_settings")
    METHODS.add(cls.facts.name, cls)
    return cls


def get_method(name: str) -> Method:
    """The method registered as `name` (an unknown name gets a did-you-mean error)."""
    return METHODS.get(name)()


def list_methods(pattern: str = "*") -> list[str]:
    return METHODS.names(pattern)


def method_facts(name: str) -> MethodFacts | None:
    """The facts of the method registered as `name`, or None for a name no registered method has (a zoo entry
    may name a method whose implementation is not part of this version)."""
    return METHODS.get(name).facts if name in METHODS else None
