"""The papers' training protocols (DESIGN.md §4), chosen by dataset: what `train` does when not told otherwise."""

from __future__ import annotations

from dataclasses import dataclass

from prunectl.core.hparams import OptimSpec, ScheduleSpec


@dataclass(frozen=True)
class Protocol:
    """Baseline training plus the fine-tuning that follows pruning."""

    name: str
    optim: OptimSpec
    schedule: ScheduleSpec
    finetune_epochs: int
    finetune_lr: float = 0.001


CIFAR = Protocol("cifar", OptimSpec(lr=0.1, momentum=0.9, weight_decay=1e-4, batch_size=64),
                 ScheduleSpec(epochs=160, milestones=(0.5, 0.75), gamma=0.1), finetune_epochs=40)
IMAGENET = Protocol("imagenet", OptimSpec(lr=0.1, momentum=0.9, weight_decay=1e-4, batch_size=256),
                    ScheduleSpec(epochs=90, milestones=(1 / 3, 2 / 3), gamma=0.1), finetune_epochs=20)
# The embedded 4,000-image MNIST subset: the CIFAR recipe shrunk to run in about a minute on 2 CPU cores.
QUICK = Protocol("quick", OptimSpec(lr=0.1, momentum=0.9, weight_decay=1e-4, batch_size=64),
                 ScheduleSpec(epochs=15, milestones=(0.5, 0.75), gamma=0.1), finetune_epochs=4, finetune_lr=0.01)


def protocol_for(dataset: str) -> Protocol:
    """mnist5k → QUICK; ImageFolder trees (ImageNet) → IMAGENET; every other dataset → CIFAR."""
    if dataset == "mnist5k":
        return QUICK
    if dataset.startswith("imagefolder:") or dataset == "imagenet":
        return IMAGENET
    return CIFAR
