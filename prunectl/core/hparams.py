"""The training hyperparameters: optimiser, learning-rate schedule, a method's training, and the spec of one run."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from prunectl.core.arch import Arch
from prunectl.core.spec import Spec, check, helptext, register_spec
from prunectl.errors import ArtifactError

INIT_KINDS = ("random", "inherit", "rewind")
REWIND_POINTS = ("init",)  # or "epoch:K"
PRECISIONS = ("fp32", "bf16")  # of a run's forward passes (prunectl/training/precision.py)


@dataclass(frozen=True)
class OptimSpec(Spec):
    """SGD with momentum, as every paper prunectl reproduces uses (CIFAR defaults: docs/protocols.md#cifar-protocol)."""

    lr: float = helptext("initial learning rate", default=0.1)
    momentum: float = helptext("SGD momentum", default=0.9)
    weight_decay: float = helptext("L2 weight decay", default=1e-4)
    nesterov: bool = helptext("Nesterov momentum (Soft Filter Pruning uses it)", default=False)
    batch_size: int = helptext("images per step", default=64)

    def __post_init__(self) -> None:
        check(self.lr > 0, f"learning rate must be > 0, got {self.lr}")
        check(math.isfinite(self.lr), f"learning rate must be a finite number, got {self.lr}")
        check(math.isfinite(self.weight_decay), f"weight decay must be a finite number, got {self.weight_decay}")
        check(0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}")
        check(self.weight_decay >= 0, f"weight decay must be >= 0, got {self.weight_decay}")
        check(self.batch_size >= 1, f"batch size must be >= 1, got {self.batch_size}")
        check(not self.nesterov or self.momentum > 0, "Nesterov momentum needs momentum > 0")


@dataclass(frozen=True)
class ScheduleSpec(Spec):
    """Step schedule: lr × gamma at each milestone, given as fractions of the epochs so budgets scale it.

    >>> s = ScheduleSpec(epochs=160)
    >>> s.milestone_epochs(), s.lr_at(79, 0.1), s.lr_at(80, 0.1)
    ([80, 120], 0.1, 0.010000000000000002)
    """

    epochs: int = helptext("training epochs", default=160)
    milestones: tuple[float, ...] = helptext("lr drops, as fractions of the epochs", default=(0.5, 0.75))
    gamma: float = helptext("lr factor at each milestone", default=0.1)
    warmup_epochs: int = helptext("epochs at warmup_lr before the schedule starts", default=0)
    warmup_lr: float | None = helptext("learning rate during warmup", default=None)

    def __post_init__(self) -> None:
        check(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        check(all(0 < m < 1 for m in self.milestones), f"milestones must lie in (0, 1), got {self.milestones}")
        check(list(self.milestones) == sorted(self.milestones), "milestones must be increasing")
        check(0 < self.gamma <= 1, f"gamma must be in (0, 1], got {self.gamma}")
        check(self.warmup_epochs >= 0, "warmup epochs must be >= 0")
        check(self.warmup_epochs == 0 or self.warmup_lr is not None, "warmup needs warmup_lr")
        check(self.warmup_lr is None or (0 < self.warmup_lr < math.inf), "warmup_lr must be a finite number > 0")

    def milestone_epochs(self) -> list[int]:
        return [int(round(m * self.epochs)) for m in self.milestones]

    def lr_at(self, epoch: int, base_lr: float) -> float:
        """Learning rate for 0-based `epoch`."""
        if epoch < self.warmup_epochs:
            return float(self.warmup_lr)  # type: ignore[arg-type]
        lr = base_lr
        for m in self.milestone_epochs():
            if epoch >= m:
                lr *= self.gamma
        return lr

    @classmethod
    def constant(cls, epochs: int) -> ScheduleSpec:
        """Constant learning rate (the papers' fine-tuning)."""
        return cls(epochs=epochs, milestones=())


@dataclass(frozen=True)
class MethodTraining(Spec):
    """A pruning method acting during training: the method's registered name and its training settings (the
    fields of its `training_settings` dataclass, defaults omitted). JSON: {"method": "slimming", "settings":
    {"sparsity": 0.0001}}. Which names and settings are valid is checked where methods are known (the engine);
    this bottom layer only carries them."""

    method: str
    settings: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check(bool(self.method), "a method's training needs the method's name")
        object.__setattr__(self, "settings", dict(self.settings))

    def legacy_sparsity(self) -> float | None:
        """Network Slimming's penalty s when this is exactly slimming with {sparsity: s}, s != 0: the runs that
        the code before per-method training wrote as the top-level `"sparsity": s` (it had only s > 0)."""
        if self.method != "slimming" or set(self.settings) != {"sparsity"}:
            return None
        value = self.settings["sparsity"]
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            return None
        return float(value)


def slimming_training(sparsity: float) -> MethodTraining | None:
    """The training of `train --sparsity S`: Network Slimming's penalty S (None for S = 0, a plain run)."""
    return MethodTraining("slimming", {"sparsity": float(sparsity)}) if sparsity else None


@register_spec
@dataclass(frozen=True)
class TrainSpec(Spec):
    """Everything that determines one training run; its hash names the run directory.

    `init` says where the starting weights come from: "random" (the family's paper initialisation drawn from
    `seed`), "inherit" (the parent run's final weights: fine-tuning) or "rewind" (the baseline's weights at
    `rewind_to`: its initialisation, or "epoch:K" for late rewinding — lottery tickets). `masked` keeps the
    parent's weight mask applied through every step; `density_scaled_init` multiplies each masked layer's fresh
    weights by 1/sqrt(its density), as the seed's random-init control does. `training` names a method that acts
    during training and its settings (`MethodTraining`).

    Run ids stay those of the code before `training` existed: Network Slimming with exactly {sparsity: s} is
    written as the old top-level `"sparsity": s`, and a record with `"sparsity"` reads back as that training.
    """

    arch: Arch
    dataset: str
    data_fingerprint: str | None = helptext("sha256 of a user dataset's files (npz:, imagefolder:); None for "
                                            "built-in datasets, so their ids do not move", default=None)
    optim: OptimSpec = field(default_factory=OptimSpec)
    schedule: ScheduleSpec = field(default_factory=ScheduleSpec)
    seed: int = helptext("seed of initialisation, data order and augmentation", default=0)
    training: MethodTraining | None = helptext("a method acting during training, with its settings", default=None)
    stage: str = helptext("what this run is in the protocol (train, finetune, scratch-e, ...)", default="train")
    init: str = helptext("random | inherit | rewind", default="random")
    parent: str | None = helptext("id of the run this one derives from", default=None)
    masked: bool = helptext("apply the parent's weight mask through training", default=False)
    augment: bool = helptext("the dataset's training augmentation", default=True)
    save_init: bool = helptext("save the initial weights (lottery tickets rewind to them)", default=False)
    snapshot_epochs: tuple[int, ...] = helptext("save the weights after these epochs (late rewinding)", default=())
    rewind_to: str = helptext("init, or epoch:K (with init=rewind)", default="init")
    density_scaled_init: bool = helptext("scale fresh weights of masked layers by 1/sqrt(density)", default=False)
    budget: Mapping[str, Any] = helptext("how the epochs were computed (scratch-B)", default_factory=dict)
    # What changes a run's float rounding is part of its spec (at the defaults it is omitted, so ids stay).
    precision: str = helptext("fp32, or bf16 autocast (parameters, gradients and optimiser state stay fp32)",
                              default="fp32")
    compile: bool = helptext("torch.compile the model's forward and backward", default=False)

    def __post_init__(self) -> None:
        check(self.training is None or isinstance(self.training, MethodTraining),
              f"training must be a MethodTraining, got {type(self.training).__name__}")
        check(all(1 <= e <= self.schedule.epochs for e in self.snapshot_epochs),
              f"snapshot epochs must lie in 1..{self.schedule.epochs} (the run's epochs), got {self.snapshot_epochs}")
        check(0 <= self.seed < 2**64, f"seed must be in [0, 2**64) (what torch.manual_seed takes), got {self.seed}")
        check(self.init in INIT_KINDS, f"init must be one of {', '.join(INIT_KINDS)}, got '{self.init}'")
        check(self.init == "random" or self.parent is not None, f"init '{self.init}' needs a parent run")
        check(not self.masked or self.parent is not None, "a masked run needs a parent run holding the mask")
        check(self.rewind_to == "init" or (self.rewind_to.startswith("epoch:") and self.rewind_to[6:].isdigit()),
              f"rewind point must be 'init' or 'epoch:K', got '{self.rewind_to}'")
        check(not self.density_scaled_init or self.masked, "density-scaled initialisation needs a mask")
        check(self.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}, got '{self.precision}'")
        check(isinstance(self.compile, bool), f"compile must be true or false, got {self.compile!r}")

    @property
    def run_name(self) -> str:
        return f"{self.stage}-{self.spec_hash()}"

    def to_dict(self, omit_defaults: bool = False) -> dict[str, Any]:
        out = super().to_dict(omit_defaults)
        legacy = self.training.legacy_sparsity() if self.training is not None else None
        if legacy is not None:
            del out["training"]
            out[LEGACY_SPARSITY] = legacy
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainSpec:
        data = dict(data)
        if LEGACY_SPARSITY in data:
            sparsity = data.pop(LEGACY_SPARSITY)
            if isinstance(sparsity, bool) or not isinstance(sparsity, int | float) or sparsity < 0:
                raise ArtifactError(f"TrainSpec: sparsity must be a number >= 0, got {sparsity!r}")
            if sparsity and data.get("training") is not None:
                raise ArtifactError("TrainSpec gives both the legacy 'sparsity' and 'training'; keep one")
            if sparsity:
                data["training"] = slimming_training(sparsity).to_dict()  # type: ignore[union-attr]
        return super().from_dict(data)


# The field the code before per-method training had for Network Slimming's penalty (kept in JSON for run ids).
LEGACY_SPARSITY = "sparsity"
