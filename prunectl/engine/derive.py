"""Specs of the runs derived from a pruned model: fine-tuning (inherited weights) and scratch-E / scratch-B."""

from __future__ import annotations

from typing import Any, Literal

from prunectl import paths
from prunectl.core.flops import count
from prunectl.core.hparams import ScheduleSpec, TrainSpec
from prunectl.data import verify_dataset
from prunectl.engine.protocols import IMAGENET, protocol_for
from prunectl.errors import BadValueError
from prunectl.models import Arch, build_model
from prunectl.runs.store import Run

# ImageNet methods whose scratch-B was capped by the paper: 2× the epochs once the FLOPs ratio reaches 2.
CAPPED_METHODS = ("l1-norm", "thinet", "regression")
# Fine-tuning epochs on ImageNet by method (DESIGN.md §4); CIFAR-style data use the protocol's 40.
IMAGENET_FINETUNE = {"l1-norm": 20, "slimming": 5, "weight": 10}


def reference_spec(run: Run) -> TrainSpec:
    """The training spec of a baseline (or any training) run."""
    spec = run.spec()
    if not isinstance(spec, TrainSpec):
        raise BadValueError(f"{run.path} is a {run.stage} run, not a training run; pass the baseline's run directory")
    return spec


def _verify_baseline_data(base: TrainSpec, name: str) -> None:
    """A derived run trains on its baseline's dataset: that data must still be what the baseline saw."""
    verify_dataset(base.dataset, base.data_fingerprint, run=name, consequence="the baseline was trained on other data")


def baseline_of(run: Run) -> dict[str, Any]:
    """The spec record of the training run at the root of `run`'s lineage (the baseline that was pruned)."""
    trains = [r for r in run.lineage() if r.get("kind") == "TrainSpec"]
    if not trains:
        raise BadValueError(f"{run.path} has no baseline in its lineage")
    return trains[-1]


def method_of(run: Run) -> str | None:
    prunes = [r for r in run.lineage() if r.get("kind") == "PruneSpec"]
    if run.record.get("kind") == "PruneSpec":
        prunes.insert(0, run.record)
    return prunes[0]["spec"]["method"] if prunes else None


def finetune_epochs(dataset: str, method: str | None) -> int:
    proto = protocol_for(dataset)
    if proto is IMAGENET and method in IMAGENET_FINETUNE:
        return IMAGENET_FINETUNE[method]
    return proto.finetune_epochs


def finetune_spec(pruned: Run, *, epochs: int | None = None, lr: float | None = None) -> TrainSpec:
    """Continue training the pruned model with its inherited weights at a constant small lr (the classic
    pipeline); the baseline's optimiser settings and seed otherwise, the mask kept for weight-level runs."""
    if not pruned.is_done():
        raise BadValueError(f"run {pruned.path} has not finished")
    record = baseline_of(pruned)
    base = TrainSpec.from_dict(record["spec"])
    _verify_baseline_data(base, f"{record.get('stage', 'train')}-{record.get('id')}")
    method = method_of(pruned)
    proto = protocol_for(base.dataset)
    return TrainSpec(
        arch=pruned.arch(), dataset=base.dataset, data_fingerprint=base.data_fingerprint,
        optim=base.optim.replace(lr=lr if lr is not None else proto.finetune_lr),
        schedule=ScheduleSpec.constant(epochs if epochs is not None else finetune_epochs(base.dataset, method)),
        seed=base.seed, stage="finetune", init="inherit", parent=pruned.id, masked=pruned.has(paths.MASK),
    )


def scratch_epochs(reference_epochs: int, flops_ratio: float, *, budget: Literal["E", "B"],
                   imagenet_cap: bool = False) -> tuple[int, str]:
    """Epochs of a scratch run and the rule that gave them.

    >>> scratch_epochs(160, 313.7 / 206.3, budget="B")
    (243, 'int(160 × 1.5206) = 243')
    >>> scratch_epochs(90, 2.5, budget="B", imagenet_cap=True)
    (180, 'FLOPs ratio 2.5000 ≥ 2: 2 × 90 = 180 (ImageNet rule for l1-norm/ThiNet/regression)')
    """
    if budget == "E":
        return reference_epochs, f"same epochs as the reference: {reference_epochs}"
    if imagenet_cap and flops_ratio >= 2:
        epochs = 2 * reference_epochs
        return epochs, (f"FLOPs ratio {flops_ratio:.4f} ≥ 2: 2 × {reference_epochs} = {epochs} "
                        "(ImageNet rule for l1-norm/ThiNet/regression)")
    epochs = max(1, int(reference_epochs * flops_ratio))
    return epochs, f"int({reference_epochs} × {flops_ratio:.4f}) = {epochs}"


def scratch_spec(source: Run | Arch, reference: Run, *, budget: str, seed: int | None = None,
                 add_finetune_epochs: bool = False) -> TrainSpec:
    """Random re-initialisation of a pruned architecture (dense re-init, then the mask, for weight-level),
    trained for the reference's epochs (E) or its FLOPs budget (B): int(epochs × FLOPs_ref / FLOPs_pruned),
    counted sparse-aware for masks, lr milestones scaled with the epochs."""
    budget = budget.upper()
    if budget not in ("E", "B"):
        raise BadValueError(f"budget must be E or B, got '{budget}'")
    ref = reference_spec(reference)
    _verify_baseline_data(ref, reference.path.name)
    run = source if isinstance(source, Run) else None
    arch: Arch = source.arch() if isinstance(source, Run) else source
    if (arch.num_classes, tuple(arch.input_size)) != (ref.arch.num_classes, tuple(ref.arch.input_size)):
        raise BadValueError("the architecture and the reference baseline are for different data "
                            f"({arch.num_classes} vs {ref.arch.num_classes} classes)")
    mask = run.mask() if run is not None else None
    flops_ref = count(build_model(ref.arch), ref.arch.input_size).flops
    flops_pruned = count(build_model(arch), arch.input_size, mask).flops
    ratio = flops_ref / flops_pruned
    method = method_of(run) if run is not None else None
    ft = finetune_epochs(ref.dataset, method) if add_finetune_epochs else 0
    epochs, rule = scratch_epochs(ref.schedule.epochs + ft, ratio, budget=budget,  # type: ignore[arg-type]
                                  imagenet_cap=protocol_for(ref.dataset) is IMAGENET and method in CAPPED_METHODS)
    record = {"budget": budget, "rule": rule, "epochs": epochs, "reference": reference.id,
              "reference_epochs": ref.schedule.epochs, "finetune_epochs_added": ft, "flops_reference": flops_ref,
              "flops_pruned": flops_pruned, "flops_ratio": round(ratio, 6), "sparse_flops": mask is not None}
    return TrainSpec(
        arch=arch, dataset=ref.dataset, data_fingerprint=ref.data_fingerprint, optim=ref.optim,
        schedule=ref.schedule.replace(epochs=epochs),
        seed=ref.seed if seed is None else seed, stage=f"scratch-{budget.lower()}", init="random",
        parent=run.id if run is not None else None, masked=mask is not None, budget=record,
    )
