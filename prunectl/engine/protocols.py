"""The papers' training protocols (docs/protocols.md), chosen by dataset: what `train` does when not told otherwise.

Which protocol a dataset follows is the dataset's own fact: each registration names one, and user data (npz:,
imagefolder:) states a default inferred from its images (`prunectl.data.protocol_by_size`). Stored runs record
the choice in their spec.json (`"protocol": {"name", "why"}`, outside the hashed spec).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prunectl.core.hparams import OptimSpec, ScheduleSpec
from prunectl.data import DATASETS, PROTOCOL_NAMES, ProtocolChoice, dataset_facts


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


PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (QUICK, CIFAR, IMAGENET)}
assert tuple(sorted(PROTOCOLS)) == tuple(sorted(PROTOCOL_NAMES)), "every protocol a dataset may name is defined"


def choose_protocol(dataset: str, data_dir: str | Path | None = None) -> ProtocolChoice:
    """The protocol `dataset` follows and why: its registration's, or for user data the stated default."""
    return dataset_facts(dataset, data_dir).protocol


def protocol_for(dataset: str, data_dir: str | Path | None = None) -> Protocol:
    """The `Protocol` of a dataset (see `choose_protocol`)."""
    return PROTOCOLS[choose_protocol(dataset, data_dir).name]


def protocol_of(record: Mapping[str, Any]) -> Protocol:
    """The protocol a stored run's data followed, from its spec.json record: the `protocol` entry it was trained
    under, or for a run recorded before that entry existed, the rule of its time (a registered dataset's own;
    imagefolder: → ImageNet; any other user data → CIFAR), so runs derived from it keep their ids."""
    recorded = record.get("protocol")
    if isinstance(recorded, Mapping) and recorded.get("name") in PROTOCOLS:
        return PROTOCOLS[str(recorded["name"])]
    dataset = str(record["spec"]["dataset"])
    if dataset in DATASETS:
        return PROTOCOLS[DATASETS.get(dataset).protocol]
    return IMAGENET if dataset.startswith("imagefolder:") else CIFAR
