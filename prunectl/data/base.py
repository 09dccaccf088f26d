"""The `Dataset` abstraction, the in-memory tensor dataset with batched augmentation, and the dataset registry."""

from __future__ import annotations

import abc
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from prunectl.core.registry import Registry
from prunectl.data.augment import Augment
from prunectl.errors import BadValueError

SPLITS = ("train", "test")
DATA_DIR_ENV = "PRUNECTL_DATA_DIR"
FIX_HINT = "pass --data-dir DIR where the files are, or --download when online"


class Batches(Protocol):
    """What `Dataset.batches` returns: re-iterable, sized, yielding (x float32 (B,C,H,W), y int64 (B,))."""

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...


@dataclass(frozen=True)
class Shard:
    """This process's part of every batch when one run trains on `world` processes (torch.distributed ranks).

    Every rank draws the same seeded permutation and augmentation; of each global batch (the spec's batch size)
    rank r keeps the images r, r + world, r + 2·world, ... (as `DistributedSampler` takes `perm[rank::world]`).
    So the union of the ranks' step-k batches is exactly the one-process step-k batch, augmentation included.
    `even` (training) cuts the last global batch to a multiple of `world`, so every rank takes equally many
    images per step (at most world − 1 images of an epoch are left out); evaluation keeps them all.
    """

    rank: int = 0
    world: int = 1
    even: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world:
            raise BadValueError(f"shard rank must be in [0, {self.world}), got {self.rank}")

    def take(self, start: int, stop: int) -> slice:
        """The positions of global batch [start, stop) that this rank keeps."""
        if self.even and self.world > 1:
            stop = start + (stop - start) // self.world * self.world
        return slice(start + self.rank, stop, self.world)


WHOLE = Shard()


class Dataset(abc.ABC):
    """A classification dataset with a train and a test split, its normalisation and its training augmentation.

    Subclasses hold the data (`InMemoryDataset` for tensors, `ImageFolderDataset` for streamed files) and only
    implement `num_examples` and `batches`. A new dataset is a loader registered by name::

        @register_dataset("my-digits", num_classes=10, input_size=(1, 28, 28), protocol="cifar")
        def my_digits(root: Path, download: bool) -> Dataset:
            return InMemoryDataset("my-digits", train=(x_tr, y_tr), test=(x_te, y_te), num_classes=10,
                                   mean=(0.13,), std=(0.31,), augment=Augment(pad_crop=2))

    after which ``load_dataset("my-digits")`` and ``prunectl datasets`` know it.
    """

    def __init__(self, name: str, num_classes: int, input_size: Sequence[int], mean: Sequence[float],
                 std: Sequence[float], augment: Augment, notes: dict[str, Any] | None = None,
                 protocol: ProtocolChoice | None = None) -> None:
        self.name = name
        # Set by the loader of user data (inferred from the images) or by `load_dataset` (the registration).
        self.protocol = protocol
        self.num_classes = int(num_classes)
        self.input_size: tuple[int, int, int] = tuple(int(v) for v in input_size)  # type: ignore[assignment]
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self.augment = augment
        self.notes = dict(notes or {})
        if len(self.input_size) != 3 or len(self.mean) != self.input_size[0] or len(self.std) != len(self.mean):
            raise BadValueError(f"dataset {name}: mean/std need one value per channel of {self.input_size}")
        if min(self.std) <= 0:
            raise BadValueError(f"dataset {name}: std must be positive, got {self.std}")
        self._norm: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    @abc.abstractmethod
    def num_examples(self, split: str) -> int:
        """Number of examples in "train" or "test"."""

    @abc.abstractmethod
    def batches(self, split: str, batch_size: int, *, shuffle: bool, augment: bool, seed: int,
                device: torch.device | str = "cpu", shard: Shard = WHOLE) -> Batches:
        """Normalised batches of one split; order and augmentation are a pure function of `seed`. With a
        `shard`, `batch_size` is the global batch and each batch holds this rank's part of it (`Shard`)."""

    def describe(self) -> dict[str, Any]:
        """JSON-ready facts for spec and result files."""
        return {
            "name": self.name,
            "num_classes": self.num_classes,
            "input_size": list(self.input_size),
            "sizes": {split: self.num_examples(split) for split in SPLITS},
            "mean": list(self.mean),
            "std": list(self.std),
            "augment": self.augment.to_dict(),
            **self.notes,
        }

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B,C,H,W) → float32 (x/255 − mean)/std, computed as one multiply-add on the images' device."""
        key = str(images.device)
        if key not in self._norm:
            std = torch.tensor(self.std, dtype=torch.float64).view(1, -1, 1, 1)
            mean = torch.tensor(self.mean, dtype=torch.float64).view(1, -1, 1, 1)
            scale, shift = (1 / (255 * std)).float(), (-mean / std).float()
            self._norm[key] = scale.to(images.device), shift.to(images.device)
        scale, shift = self._norm[key]
        return images.float().mul_(scale).add_(shift)

    def __repr__(self) -> str:
        sizes = "/".join(str(self.num_examples(s)) for s in SPLITS)
        return f"{type(self).__name__}({self.name!r}, {sizes} images of {self.input_size}, {self.num_classes} classes)"


def check_split(split: str, batch_size: int) -> None:
    if split not in SPLITS:
        raise BadValueError(f"split must be 'train' or 'test', got {split!r}")
    if batch_size < 1:
        raise BadValueError(f"batch_size must be >= 1, got {batch_size}")


def canonical_device(device: torch.device | str) -> torch.device:
    """'cuda' and 'cuda:0' name the same memory; give them one key so data is moved there once."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


class InMemoryDataset(Dataset):
    """Both splits as uint8 (N,C,H,W) image and int64 (N,) label tensors; batches are built with tensor ops.

    No DataLoader and no workers: a batch is an index into a seeded permutation, one gather for the per-image crop
    and flip (`Augment.apply`), and one multiply-add to normalise. The tensors move to a device once per device.
    """

    def __init__(self, name: str, *, train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor],
                 num_classes: int, mean: Sequence[float], std: Sequence[float], augment: Augment,
                 notes: dict[str, Any] | None = None) -> None:
        shapes = set()
        for split, (images, labels) in (("train", train), ("test", test)):
            if images.dtype != torch.uint8 or images.dim() != 4:
                raise BadValueError(f"dataset {name}: {split} images must be uint8 (N,C,H,W), got "
                                    f"{images.dtype} {tuple(images.shape)}")
            if labels.dim() != 1 or len(labels) != len(images):
                raise BadValueError(f"dataset {name}: {split} has {len(images)} images but labels of shape "
                                    f"{tuple(labels.shape)}")
            shapes.add(tuple(images.shape[1:]))
        if len(shapes) != 1:
            raise BadValueError(f"dataset {name}: train and test images differ in shape: {sorted(shapes)}")
        if augment.resized_crop:
            raise BadValueError(f"dataset {name}: resized_crop is for streamed data; use pad_crop for tensors")
        super().__init__(name, num_classes, shapes.pop(), mean, std, augment, notes)
        self._splits = {
            "train": (train[0].contiguous(), train[1].to(torch.int64)),
            "test": (test[0].contiguous(), test[1].to(torch.int64)),
        }
        self._on_device: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = {}

    def tensors(self, split: str, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """The raw uint8 images and int64 labels of a split, on `device` (moved once, then cached)."""
        check_split(split, 1)
        device = canonical_device(device)
        if device.type == "cpu":
            return self._splits[split]
        key = (split, str(device))
        if key not in self._on_device:
            self._on_device[key] = tuple(t.to(device) for t in self._splits[split])  # type: ignore[assignment]
        return self._on_device[key]

    def num_examples(self, split: str) -> int:
        check_split(split, 1)
        return len(self._splits[split][1])

    def batches(self, split: str, batch_size: int, *, shuffle: bool, augment: bool, seed: int,
                device: torch.device | str = "cpu", shard: Shard = WHOLE) -> TensorBatches:
        check_split(split, batch_size)
        return TensorBatches(self, split, batch_size, shuffle=shuffle, augment=augment, seed=seed,
                             device=canonical_device(device), shard=shard)


@dataclass(frozen=True)
class TensorBatches:
    """One epoch of an `InMemoryDataset`; iterating again replays exactly the same batches.

    The order and every crop-and-flip code of the epoch are drawn up front on the CPU and moved to the device
    once, so iterating issues no host-device copy (and no synchronisation) per batch.
    """

    dataset: InMemoryDataset
    split: str
    batch_size: int
    shuffle: bool
    augment: bool
    seed: int
    device: torch.device
    shard: Shard = WHOLE

    def __len__(self) -> int:
        n, bs = self.dataset.num_examples(self.split), self.batch_size
        steps = math.ceil(n / bs)
        if self.shard.even and steps and len(range(*self.shard.take((steps - 1) * bs, n).indices(n))) == 0:
            steps -= 1  # the last global batch is smaller than the world: no rank gets an image of it
        return steps

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        images, labels = self.dataset.tensors(self.split, self.device)
        n, bs = len(labels), self.batch_size
        generator = torch.Generator().manual_seed(self.seed)
        order = torch.randperm(n, generator=generator).to(self.device) if self.shuffle else None
        augment = self.augment and not self.dataset.augment.is_identity
        codes = self.dataset.augment.draw_codes(n, generator).to(self.device) if augment else None
        for step in range(len(self)):
            part = self.shard.take(step * bs, min(n, (step + 1) * bs))
            if order is None and self.shard.world == 1:
                x, y = images[part], labels[part]
            else:
                index = order[part] if order is not None else torch.arange(n, device=self.device)[part]
                x, y = images.index_select(0, index), labels.index_select(0, index)
            if codes is not None:
                x = self.dataset.augment.apply_codes(x, codes[part])
            yield self.dataset.normalise(x), y


# The training protocols a dataset can follow (defined in prunectl.engine.protocols): "quick" is the embedded
# subset's shrunk recipe, "cifar" the CIFAR-style one of small images, "imagenet" the ImageNet one.
PROTOCOL_NAMES = ("quick", "cifar", "imagenet")
# User images at most this many pixels on a side get the CIFAR-style protocol, larger ones the ImageNet one
# (CIFAR and MNIST are 32 and 28 px, downsampled ImageNet variants 32 to 64 px; ImageNet itself is ~400 px).
SMALL_IMAGE_MAX = 64


@dataclass(frozen=True)
class ProtocolChoice:
    """Which training protocol a dataset follows, and why (said to the user and kept in the run's record)."""

    name: str
    why: str

    def __post_init__(self) -> None:
        if self.name not in PROTOCOL_NAMES:
            raise BadValueError(f"unknown training protocol '{self.name}' (known: {', '.join(PROTOCOL_NAMES)})")

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "why": self.why}


def protocol_by_size(source: str, input_size: Sequence[int]) -> ProtocolChoice:
    """The stated default for user data: the CIFAR-style protocol for small images, ImageNet's for larger."""
    c, h, w = input_size
    if max(h, w) <= SMALL_IMAGE_MAX:
        return ProtocolChoice("cifar", f"{source} holds small images ({c}x{h}x{w}, at most {SMALL_IMAGE_MAX} px "
                                       "a side): the CIFAR-style protocol")
    return ProtocolChoice("imagenet", f"{source} holds large images ({c}x{h}x{w}, over {SMALL_IMAGE_MAX} px a "
                                      "side): the ImageNet protocol")


@dataclass(frozen=True)
class DatasetEntry:
    """A registered dataset: its loader plus the facts known without touching any file, including the training
    protocol it follows (one of `PROTOCOL_NAMES`)."""

    loader: Callable[[Path, bool], Dataset]
    num_classes: int
    input_size: tuple[int, int, int]
    protocol: str

    def protocol_choice(self, name: str) -> ProtocolChoice:
        return ProtocolChoice(self.protocol, f"{name} is registered with the {self.protocol} protocol")


DATASETS = Registry[DatasetEntry]("dataset")


def register_dataset(name: str, *, num_classes: int, input_size: tuple[int, int, int],
                     protocol: str) -> Callable[[Callable[[Path, bool], Dataset]], Callable[[Path, bool], Dataset]]:
    """Register `loader(root, download) -> Dataset` under `name` (see `Dataset` for an example); `protocol`
    names the training protocol it follows: "cifar" for small images, "imagenet" for large ones."""
    ProtocolChoice(protocol, "")  # refuses an unknown protocol name at import time

    def deco(loader: Callable[[Path, bool], Dataset]) -> Callable[[Path, bool], Dataset]:
        DATASETS.add(name, DatasetEntry(loader, num_classes, tuple(input_size), protocol))  # type: ignore[arg-type]
        return loader

    return deco


def resolve_data_dir(data_dir: str | Path | None = None) -> Path:
    """The argument, else $PRUNECTL_DATA_DIR, else ~/.cache/prunectl/data (never created here)."""
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser()
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "prunectl" / "data"


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Fixed stratified split → (train indices, test indices), both sorted.

    Classes in increasing order each permute their indices with one `numpy.random.default_rng(seed)`; the first
    round-half-up(n_c × test_fraction) of each class go to test, the rest to train.
    """
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        members = members[rng.permutation(len(members))]
        k = int(math.floor(len(members) * test_fraction + 0.5))
        test.append(members[:k])
        train.append(members[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of uint8 (N,C,H,W) images scaled to [0, 1], rounded to 4 places."""
    c = images.shape[1]
    total = torch.zeros(c, dtype=torch.float64)
    squares = torch.zeros(c, dtype=torch.float64)
    for start in range(0, len(images), chunk):
        x = images[start:start + chunk].to(torch.float64).div_(255).transpose(0, 1).reshape(c, -1)
        total += x.sum(1)
        squares += (x * x).sum(1)
    count = max(1, images.numel() // c)
    mean = total / count
    std = (squares / count - mean * mean).clamp_min(0).sqrt()
    return (tuple(round(float(m), 4) for m in mean),
            tuple(round(float(s), 4) if s > 1e-4 else 1.0 for s in std))


def one_line(err: BaseException) -> str:
    """An exception as one short line, for error messages that must stay on one line."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def parse_source(spec: str, allowed: Sequence[str]) -> tuple[str, dict[str, str]]:
    """Split ``PATH?key=value&key=value`` into the path and its options, rejecting unknown keys."""
    path, _, query = spec.partition("?")
    options: dict[str, str] = {}
    for item in filter(None, query.split("&")):
        key, sep, value = item.partition("=")
        if not sep or key not in allowed:
            known = ", ".join(f"{k}=..." for k in allowed)
            raise BadValueError(f"unknown dataset option {item!r} in {spec!r} (known: {known})")
        options[key] = value
    if not path:
        raise BadValueError(f"dataset {spec!r} names no path")
    return path, options


def int_option(options: dict[str, str], key: str, default: int, minimum: int = 0) -> int:
    """An integer option ≥ `minimum` ("flip=1", "size=32"), or `default` when absent."""
    if key not in options:
        return default
    try:
        value = int(options[key])
    except ValueError:
        raise BadValueError(f"dataset option {key} must be an integer, got {options[key]!r}") from None
    if value < minimum:
        raise BadValueError(f"dataset option {key} must be >= {minimum}, got {value}")
    return value


def locate(path: str, data_dir: str | Path | None) -> Path:
    """A user path as given (absolute, or relative to the working directory), else relative to the data directory."""
    given = Path(path).expanduser()
    if given.is_absolute() or given.exists():
        return given
    under = resolve_data_dir(data_dir) / given
    return under if under.exists() else given
