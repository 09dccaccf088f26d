"""Dataset front door: `load_dataset`, `list_datasets`, `dataset_shape`, and the `Dataset`/`Augment` types."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# Importing the modules registers their datasets.
from prunectl.data import embedded, torchvision_sets  # noqa: F401
from prunectl.data.augment import Augment
from prunectl.data.base import (
    DATASETS,
    PROTOCOL_NAMES,
    Batches,
    Dataset,
    DatasetEntry,
    InMemoryDataset,
    ProtocolChoice,
    Shard,
    register_dataset,
    resolve_data_dir,
)
from prunectl.data.fingerprint import canonical_dataset, is_user_dataset, verify_dataset
from prunectl.data.imagefolder import ImageFolderDataset, load_imagefolder
from prunectl.data.npzfile import load_npz
from prunectl.errors import BadValueError

__all__ = [
    "DATASETS",
    "Augment",
    "Batches",
    "Dataset",
    "DatasetEntry",
    "ImageFolderDataset",
    "InMemoryDataset",
    "Shard",
    "canonical_dataset",
    "PROTOCOL_NAMES",
    "DataFacts",
    "ProtocolChoice",
    "dataset_facts",
    "dataset_shape",
    "is_user_dataset",
    "list_datasets",
    "load_dataset",
    "register_dataset",
    "resolve_data_dir",
    "verify_dataset",
]

def list_datasets(pattern: str = "*") -> list[str]:
    """Registered dataset names matching a glob; ``imagefolder:PATH`` and ``npz:PATH`` work besides these."""
    return DATASETS.names(pattern)


def load_dataset(name: str, data_dir: str | Path | None = None, download: bool = False) -> Dataset:
    """A dataset by registered name, or ``npz:PATH`` / ``imagefolder:PATH`` for files of your own.

    Registered: ``mnist5k`` (embedded, offline), ``cifar10``, ``cifar100``, ``mnist``, ``fashion-mnist``, ``svhn``
    (torchvision's files) and ``imagenet`` (an ImageFolder tree). `data_dir` defaults to $PRUNECTL_DATA_DIR, else
    ~/.cache/prunectl/data. Missing files raise `DataUnavailableError` unless `download` is true and torchvision
    can fetch them.

    >>> ds = load_dataset("mnist5k")
    >>> ds.num_examples("train"), ds.num_examples("test"), ds.input_size
    (4000, 1000, (1, 28, 28))
    >>> x, y = next(iter(ds.batches("train", 64, shuffle=True, augment=True, seed=0)))
    >>> tuple(x.shape), x.dtype, y.dtype
    ((64, 1, 28, 28), torch.float32, torch.int64)
    """
    if name.startswith("npz:"):
        return load_npz(name, data_dir)
    if name.startswith("imagefolder:"):
        return load_imagefolder(name, data_dir)
    if name in ("npz", "imagefolder"):
        raise BadValueError(f"dataset '{name}' needs a path: write {name}:PATH")
    entry = DATASETS.get(name)
    dataset = entry.loader(resolve_data_dir(data_dir), download)
    dataset.protocol = entry.protocol_choice(name)
    return dataset


@dataclass(frozen=True)
class DataFacts:
    """What a spec needs to know of a dataset before training: its shape and the protocol it follows."""

    num_classes: int
    input_size: tuple[int, int, int]
    protocol: ProtocolChoice


def dataset_facts(name: str, data_dir: str | Path | None = None) -> DataFacts:
    """Classes, input size and training protocol; registered names answer without touching any file, user
    data (npz:, imagefolder:) is opened and the protocol inferred from its images."""
    if name in DATASETS:
        entry = DATASETS.get(name)
        return DataFacts(entry.num_classes, entry.input_size, entry.protocol_choice(name))
    ds = load_dataset(name, data_dir)
    assert ds.protocol is not None, "user-data loaders state the protocol they infer"
    return DataFacts(ds.num_classes, ds.input_size, ds.protocol)


def dataset_shape(name: str, data_dir: str | Path | None = None) -> tuple[int, tuple[int, int, int]]:
    """(num_classes, input_size) of a dataset; registered names answer without touching any file."""
    facts = dataset_facts(name, data_dir)
    return facts.num_classes, facts.input_size
