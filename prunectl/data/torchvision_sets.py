"""CIFAR-10/100, MNIST, Fashion-MNIST and SVHN, read in memory through torchvision's own dataset classes."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision import datasets
from torchvision.datasets import cifar as tv_cifar

from prunectl.data.augment import Augment
from prunectl.data.base import FIX_HINT, InMemoryDataset, one_line, register_dataset
from prunectl.data.cifar_batches import read_batches
from prunectl.errors import DataUnavailableError

Arrays = tuple[torch.Tensor, torch.Tensor]


class _PresentSVHN(datasets.SVHN):
    """torchvision's SVHN reader with a presence check instead of md5."""

    def _check_integrity(self) -> bool:
        return os.path.isfile(os.path.join(self.root, self.filename))


@dataclass(frozen=True)
class _Source:
    """How to find and read one torchvision dataset.

    Files live where torchvision puts them under the data directory (the root given to its classes):
    ``cifar-10-batches-py/``, ``cifar-100-python/``, ``MNIST/raw/``, ``FashionMNIST/raw/``, ``train_32x32.mat``
    and ``test_32x32.mat``, so --data-dir can point at an existing torchvision root. They are checked for presence,
    not checksum: torchvision verifies the archive's checksum when it downloads, and hashing 170 MB on every load
    would only slow runs down (a damaged file still fails to parse and is reported).
    """

    name: str
    files: tuple[str, ...]  # relative to the root; all must exist
    read: Callable[[Path, bool, bool], Arrays]  # (root, train, download) -> (uint8 NCHW images, labels)
    needs: str | None = None  # a module the reader imports, named in the error if missing


def _read_cifar(cls: type[datasets.CIFAR10], label_key: str) -> Callable[[Path, bool, bool], Arrays]:
    """torchvision's file lists and archive, but batches read by prunectl's restricted unpickler (cifar_batches)."""
    def read(root: Path, train: bool, download: bool) -> Arrays:
        folder = root / cls.base_folder
        names = [name for name, _ in (cls.train_list if train else cls.test_list)]
        if download and not all((folder / n).is_file() for n in names):  # the archive's md5 is checked
            tv_cifar.download_and_extract_archive(cls.url, str(root), filename=cls.filename, md5=cls.tgz_md5)
        images, labels = read_batches(folder, names, label_key)
        return torch.from_numpy(np.ascontiguousarray(images)), torch.as_tensor(labels, dtype=torch.int64)

    return read


def _read_mnist(cls: type) -> Callable[[Path, bool, bool], Arrays]:
    def read(root: Path, train: bool, download: bool) -> Arrays:
        ds = cls(str(root), train=train, download=download)
        return ds.data.unsqueeze(1).contiguous(), ds.targets.to(torch.int64)

    return read


def _read_svhn(root: Path, train: bool, download: bool) -> Arrays:
    ds = _PresentSVHN(str(root), split="train" if train else "test", download=download)
    return torch.from_numpy(np.ascontiguousarray(ds.data)), torch.from_numpy(ds.labels.astype(np.int64))


def _idx_files(folder: str) -> tuple[str, ...]:
    return tuple(f"{folder}/raw/{part}-ubyte" for part in ("train-images-idx3", "train-labels-idx1",
                                                            "t10k-images-idx3", "t10k-labels-idx1"))


def _expected(source: _Source) -> str:
    """The files a dataset reads, folder by folder: `cifar-10-batches-py/{data_batch_1, ..., test_batch}`."""
    folders: dict[str, list[str]] = {}
    for name in source.files:
        folder, _, file = name.rpartition("/")
        folders.setdefault(folder, []).append(file)
    return ", ".join(f"{folder}/{{{', '.join(files)}}}" if folder and len(files) > 1 else
                     (f"{folder}/{files[0]}" if folder else ", ".join(files)) for folder, files in folders.items())


def _fetch(source: _Source, root: Path, download: bool) -> tuple[Arrays, Arrays]:
    """Both splits of a torchvision dataset, downloading first if asked and needed; one-line errors otherwise."""
    if source.needs is not None:
        try:
            importlib.import_module(source.needs)
        except ImportError:
            raise DataUnavailableError(f"{source.name} needs {source.needs.split('.')[0]} to read its files: "
                                       f"pip install {source.needs.split('.')[0]}") from None
    missing = [f for f in source.files if not (root / f).is_file()]
    if missing and not download:
        raise DataUnavailableError(f"dataset {source.name} not found in {root}: it reads {_expected(source)} "
                                   f"under that directory, and {len(missing)} of {len(source.files)} are missing "
                                   f"(first: {missing[0]}); {FIX_HINT}")
    if missing:
        try:
            return source.read(root, True, True), source.read(root, False, True)
        except Exception as err:  # any network or archive failure means the same thing to the user
            raise DataUnavailableError(f"could not download {source.name} into {root} ({one_line(err)}); "
                                       f"{FIX_HINT}") from err
    try:
        return source.read(root, True, False), source.read(root, False, False)
    except (OSError, RuntimeError, ValueError, KeyError, EOFError, TypeError, IndexError) as err:
        raise DataUnavailableError(f"could not read {source.name} from {root} ({one_line(err)}); the files look "
                                   f"damaged: {FIX_HINT}") from err


def _in_memory(source: _Source, root: Path, download: bool, num_classes: int, mean: tuple[float, ...],
               std: tuple[float, ...], augment: Augment, **notes: Any) -> InMemoryDataset:
    train, test = _fetch(source, root, download)
    return InMemoryDataset(source.name, train=train, test=test, num_classes=num_classes, mean=mean, std=std,
                           augment=augment, notes=notes or None)


CIFAR10 = _Source("cifar10", tuple(f"cifar-10-batches-py/{f}" for f in
                                   [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]),
                  _read_cifar(datasets.CIFAR10, "labels"))
CIFAR100 = _Source("cifar100", ("cifar-100-python/train", "cifar-100-python/test"), _read_cifar(datasets.CIFAR100, "fine_labels"))
MNIST = _Source("mnist", _idx_files("MNIST"), _read_mnist(datasets.MNIST))
FASHION_MNIST = _Source("fashion-mnist", _idx_files("FashionMNIST"), _read_mnist(datasets.FashionMNIST))
SVHN = _Source("svhn", ("train_32x32.mat", "test_32x32.mat"), _read_svhn, needs="scipy.io")
CIFAR_AUGMENT = Augment(pad_crop=4, hflip=True)


@register_dataset("cifar10", num_classes=10, input_size=(3, 32, 32), protocol="cifar")
def cifar10(root: Path, download: bool = False) -> InMemoryDataset:
    """CIFAR-10 with the papers' normalisation and augmentation (docs/protocols.md#normalisation-and-augmentation)."""
    return _in_memory(CIFAR10, root, download, 10, (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010),
                      CIFAR_AUGMENT)


@register_dataset("cifar100", num_classes=100, input_size=(3, 32, 32), protocol="cifar")
def cifar100(root: Path, download: bool = False) -> InMemoryDataset:
    """CIFAR-100 (fine labels) with its own statistics, not CIFAR-10's (a quirk of the seed we do not copy)."""
    return _in_memory(CIFAR100, root, download, 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762),
                      CIFAR_AUGMENT)


@register_dataset("mnist", num_classes=10, input_size=(1, 28, 28), protocol="cifar")
def mnist(root: Path, download: bool = False) -> InMemoryDataset:
    """MNIST, 60,000/10,000, from torchvision's raw idx files; pad 2 + crop, never a flip (digits)."""
    return _in_memory(MNIST, root, download, 10, (0.1307,), (0.3081,), Augment(pad_crop=2))


@register_dataset("fashion-mnist", num_classes=10, input_size=(1, 28, 28), protocol="cifar")
def fashion_mnist(root: Path, download: bool = False) -> InMemoryDataset:
    """Fashion-MNIST, 60,000/10,000, from torchvision's raw idx files.

    Same recipe as MNIST (pad 2 + crop, no flip) so the two stay comparable; mirrored clothes would be plausible,
    but nothing in the papers' protocols asks for it.
    """
    return _in_memory(FASHION_MNIST, root, download, 10, (0.2860,), (0.3530,), Augment(pad_crop=2))


@register_dataset("svhn", num_classes=10, input_size=(3, 32, 32), protocol="cifar")
def svhn(root: Path, download: bool = False) -> InMemoryDataset:
    """SVHN train (73,257) / test (26,032) from torchvision's .mat files (needs scipy); label 10 means digit 0.

    Pad 4 + crop, no flip: house numbers are digits too. The 'extra' split (531,131) is not used.
    """
    return _in_memory(SVHN, root, download, 10, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970),
                      Augment(pad_crop=4))
