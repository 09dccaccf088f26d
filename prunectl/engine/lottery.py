"""Engine stage `lottery`: iterative magnitude pruning with rewinding, and its random-initialisation control."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prunectl import paths
from prunectl.core.hparams import ScheduleSpec, TrainSpec
from prunectl.core.spec import Spec, check, helptext
from prunectl.engine.arms import arm
from prunectl.engine.derive import reference_spec
from prunectl.engine.protocols import Protocol, protocol_of
from prunectl.engine.prune import prune, prune_spec
from prunectl.engine.train import train
from prunectl.errors import ArtifactError, BadValueError
from prunectl.runs.store import Run
from prunectl.training.trainer import Progress

STRUCTURES = {"weight": "weight", "filter": "l1-mask"}
TICKET_STAGE = arm("winning-ticket").stage
CONTROL_STAGE = arm("random-init").stage


@dataclass(frozen=True)
class LotterySettings(Spec):
    """Frankle & Carbin's procedure as the Rethinking paper ran it.

    Each round removes `rate` of the weights still alive by one global magnitude threshold (`structure="filter"`:
    `rate` of each conv layer's alive filters by L1 norm), rewinds the survivors to the baseline's initial
    weights (`rewind="epoch:K"`: to its weights after K epochs; `rewind="finetune"`: keep the trained weights and
    fine-tune instead) and retrains with the baseline's schedule. The control arm trains the same mask from
    fresh weights: the family's initialiser with a new seed, each masked layer scaled by 1/sqrt(its density) as
    the seed's code does (its std is sqrt(2 / n) with n the surviving fan-out).
    """

    rate: float = helptext("fraction of the remaining weights removed per round", default=0.2)
    rounds: int = helptext("pruning rounds", default=3)
    target_sparsity: float | None = helptext("one-shot to this sparsity instead of rounds", default=None)
    structure: str = helptext("weight (unstructured) or filter (L1-norm filter masks)", default="weight")
    include_linear: bool = helptext("prune linear layers too (unstructured only)", default=False)
    rewind: str = helptext("init, epoch:K, or finetune", default="init")

    def __post_init__(self) -> None:
        check(0 < self.rate < 1, f"rate must be in (0, 1), got {self.rate}")
        check(self.rounds >= 1, f"rounds must be >= 1, got {self.rounds}")
        check(self.target_sparsity is None or 0 < self.target_sparsity < 1,
              f"target sparsity must be in (0, 1), got {self.target_sparsity}")
        check(self.structure in STRUCTURES, f"structure must be weight or filter, got '{self.structure}'")
        check(self.rewind in ("init", "finetune") or (self.rewind.startswith("epoch:") and self.rewind[6:].isdigit()),
              f"rewind must be init, epoch:K or finetune, got '{self.rewind}'")

    def rates(self) -> list[float]:
        """The fraction removed in each round (one-shot: a single round to the target)."""
        return [self.target_sparsity] if self.target_sparsity is not None else [self.rate] * self.rounds

    def snapshot_epochs(self) -> tuple[int, ...]:
        """Epochs whose weights the baseline must keep for this rewinding."""
        return (int(self.rewind[6:]),) if self.rewind.startswith("epoch:") else ()

    def method_settings(self) -> dict[str, Any]:
        if self.structure == "weight":
            return {"include_linear": True} if self.include_linear else {}
        return {}


@dataclass
class LotteryRound:
    round: int
    pruned: Run
    ticket: Run
    random: Run


@dataclass
class LotteryRuns:
    baseline: Run
    rounds: list[LotteryRound] = field(default_factory=list)

    def arm_runs(self) -> list[Run]:
        return [run for r in self.rounds for run in (r.ticket, r.random)]


def control_seed(seed: int, round_: int) -> int:
    """A seed for the random-init arm that differs from the baseline's, so its weights really are fresh."""
    return int.from_bytes(hashlib.sha256(f"random-init:{seed}:{round_}".encode()).digest()[:4], "little")


def check_baseline(baseline: Run, settings: LotterySettings) -> TrainSpec:
    base = reference_spec(baseline)
    if not baseline.is_done():
        raise ArtifactError(f"baseline {baseline.path} has not finished; rerun its command to resume it")
    if settings.rewind == "init" and not baseline.has(paths.INIT):
        raise BadValueError(f"baseline {baseline.path} has no saved initial weights; retrain it with --save-init")
    if settings.rewind.startswith("epoch:"):
        k = int(settings.rewind[6:])
        if not baseline.has(paths.rewind_weights(k)):
            raise BadValueError(f"baseline {baseline.path} has no weights after epoch {k}; retrain it with "
                                f"--snapshot-epochs {k}")
    return base


def lottery(baseline: Run, settings: LotterySettings, *, data_dir: str | Path | None = None,
            device: str | None = None, progress: Callable[[str], Callable[[Progress], None] | None] | None = None,
            note: Callable[[str], None] = lambda message: None) -> LotteryRuns:
    """Run every round and arm that is missing; each is a run in the store, with its lineage on disk."""
    base = check_baseline(baseline, settings)
    method = STRUCTURES[settings.structure]
    out = LotteryRuns(baseline)
    parent = baseline
    for r, rate in enumerate(settings.rates(), start=1):
        pruned = prune(parent, prune_spec(parent, method, {"ratio": rate, **settings.method_settings()}),
                       data_dir=data_dir, device=device, note=note)
        ticket = train(_ticket_spec(base, pruned, settings, protocol_of(baseline.record)), parent=pruned, rewind_source=baseline,
                       data_dir=data_dir, device=device, progress=_bar(progress, f"round {r} ticket"))
        control = base.replace(stage=CONTROL_STAGE, init="random", parent=pruned.id, masked=True,
                               density_scaled_init=True, seed=control_seed(base.seed, r), save_init=False,
                               snapshot_epochs=())
        random = train(control, parent=pruned, data_dir=data_dir, device=device,
                       progress=_bar(progress, f"round {r} random-init"))
        out.rounds.append(LotteryRound(r, pruned, ticket, random))
        parent = ticket
    return out


def _ticket_spec(base: TrainSpec, pruned: Run, settings: LotterySettings, proto: Protocol) -> TrainSpec:
    common = {"parent": pruned.id, "masked": True, "save_init": True, "snapshot_epochs": ()}
    if settings.rewind == "finetune":
        return base.replace(stage=arm("fine-tuned").stage, init="inherit",
                            optim=base.optim.replace(lr=proto.finetune_lr),
                            schedule=ScheduleSpec.constant(proto.finetune_epochs), **common)
    return base.replace(stage=TICKET_STAGE, init="rewind", rewind_to=settings.rewind, **common)


def _bar(progress: Callable[[str], Callable[[Progress], None] | None] | None,
         label: str) -> Callable[[Progress], None] | None:
    return progress(label) if progress else None
