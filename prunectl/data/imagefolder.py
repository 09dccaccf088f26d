"""Streamed ImageFolder trees (``imagefolder:PATH`` and ``imagenet``) under the ImageNet protocol."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision.transforms.functional as TF
from torch.utils.data import DataLoader, Sampler
from torch.utils.data import Dataset as TorchDataset
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import default_loader

from prunectl.data.augment import Augment, resized_crop_box
from prunectl.data.base import (
    Dataset,
    canonical_device,
    check_split,
    int_option,
    locate,
    one_line,
    parse_source,
    register_dataset,
)
from prunectl.errors import DataUnavailableError

PREFIX = "imagefolder:"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
Sample = tuple[str, int]


def default_workers() -> int:
    return min(4, os.cpu_count() or 1)


class ImageFolderDataset(Dataset):
    """Image files decoded on the fly; `batches` has the same contract as the in-memory datasets'.

    `root` holds ``train/`` and ``val/`` (or ``test/``), each with one subfolder of images per class; test classes
    are mapped by name onto the train classes. The ImageNet protocol (DESIGN.md §4): training images get a
    RandomResizedCrop to `size` (224) and a flip, evaluation images a resize of the short side to `resize`
    (round(size × 256 / 224), i.e. 256) and a centre crop of `size`; ImageNet's mean and std. Images are decoded
    in DataLoader workers, but every random draw comes from a generator seeded per image from the epoch's seed,
    so batches depend neither on the number of workers nor on torch's global RNG.
    """

    def __init__(self, name: str, root: Path, *, size: int = 224, resize: int | None = None, hflip: bool = True,
                 num_workers: int | None = None) -> None:
        self.root = root
        self.size = size
        self.resize = resize or round(size * 256 / 224)
        self.num_workers = default_workers() if num_workers is None else num_workers
        train, classes = _scan(root, "train")
        test_dir = next((d for d in ("val", "test") if (root / d).is_dir()), "val")
        test, test_classes = _scan(root, test_dir)
        unknown = sorted(set(test_classes) - set(classes))
        if unknown:
            raise DataUnavailableError(f"{root / test_dir} has classes missing from {root / 'train'}: "
                                       f"{', '.join(unknown[:5])}")
        index = {c: i for i, c in enumerate(classes)}
        self._samples = {"train": train, "test": [(p, index[test_classes[t]]) for p, t in test]}
        super().__init__(name, len(classes), (3, size, size), IMAGENET_MEAN, IMAGENET_STD,
                         Augment(resized_crop=size, hflip=hflip),
                         notes={"source": str(root.resolve()), "test_folder": test_dir,
                                "eval": f"resize {self.resize} + centre crop {size}"})

    def num_examples(self, split: str) -> int:
        check_split(split, 1)
        return len(self._samples[split])

    def samples(self, split: str) -> list[Sample]:
        """(file path, class index) of every image of a split, in ImageFolder's sorted order."""
        check_split(split, 1)
        return self._samples[split]

    def batches(self, split: str, batch_size: int, *, shuffle: bool, augment: bool, seed: int,
                device: torch.device | str = "cpu") -> FolderBatches:
        check_split(split, batch_size)
        return FolderBatches(self, split, batch_size, shuffle, augment, seed, canonical_device(device))


def _scan(root: Path, sub: str) -> tuple[list[Sample], list[str]]:
    if not (root / sub).is_dir():
        raise DataUnavailableError(f"no {sub}/ folder in {root}: an image folder needs train/ and val/ (or test/) "
                                   f"with one subfolder per class")
    try:
        folder = ImageFolder(str(root / sub))
    except (FileNotFoundError, OSError) as err:
        raise DataUnavailableError(f"cannot use {root / sub} as an image folder ({one_line(err)})") from err
    return list(folder.samples), list(folder.classes)


class _SeededSampler(Sampler[tuple[int, int]]):
    """Yields (index, per-image seed), both drawn from one generator seeded with the epoch's seed."""

    def __init__(self, count: int, shuffle: bool, seed: int) -> None:
        self.count, self.shuffle, self.seed = count, shuffle, seed

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[tuple[int, int]]:
        generator = torch.Generator().manual_seed(self.seed)
        order = torch.randperm(self.count, generator=generator) if self.shuffle else torch.arange(self.count)
        seeds = torch.randint(0, 2**62, (self.count,), generator=generator)
        return iter(zip(order.tolist(), seeds.tolist(), strict=True))


class _Images(TorchDataset):
    """Decodes one image to a uint8 (3, S, S) tensor: the random train transform or the deterministic eval one."""

    def __init__(self, samples: list[Sample], augment: Augment | None, size: int, resize: int) -> None:
        self.samples, self.augment, self.size, self.resize = samples, augment, size, resize

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, seed = key
        path, target = self.samples[index]
        image = default_loader(path)
        if self.augment is None or not self.augment.resized_crop:
            image = TF.center_crop(TF.resize(image, self.resize), [self.size, self.size])
        else:
            generator = torch.Generator().manual_seed(seed)
            top, left, h, w = resized_crop_box(image.width, image.height, self.augment, generator)
            image = TF.resized_crop(image, top, left, h, w, [self.size, self.size], antialias=True)
            if self.augment.hflip and float(torch.rand(1, generator=generator)) < 0.5:
                image = TF.hflip(image)
        return TF.pil_to_tensor(image), target


@dataclass(frozen=True)
class FolderBatches:
    """One epoch of an `ImageFolderDataset` through a DataLoader; iterating again replays the same batches."""

    dataset: ImageFolderDataset
    split: str
    batch_size: int
    shuffle: bool
    augment: bool
    seed: int
    device: torch.device

    def __len__(self) -> int:
        return math.ceil(self.dataset.num_examples(self.split) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        ds = self.dataset
        images = _Images(ds.samples(self.split), ds.augment if self.augment else None, ds.size, ds.resize)
        loader = DataLoader(
            images,
            batch_size=self.batch_size,
            sampler=_SeededSampler(len(images), self.shuffle, self.seed),
            num_workers=ds.num_workers,
            pin_memory=self.device.type == "cuda",
            # The loader draws its workers' base seed from this generator, not from torch's global RNG.
            generator=torch.Generator().manual_seed(self.seed),
        )
        for x, y in loader:
            yield ds.normalise(x.to(self.device, non_blocking=True)), y.to(self.device, non_blocking=True)


def load_imagefolder(name: str, data_dir: str | Path | None = None) -> ImageFolderDataset:
    """Load ``imagefolder:PATH[?size=S&resize=R&flip=0|1&workers=W]`` (see `ImageFolderDataset`).

    ``size=32`` makes small user datasets work (eval resize then defaults to 37); ``workers`` defaults to
    min(4, CPU count). A relative PATH is tried in the working directory, then in the data directory.
    """
    path, options = parse_source(name[len(PREFIX):], ("size", "resize", "flip", "workers"))
    root = locate(path, data_dir)
    if not root.is_dir():
        raise DataUnavailableError(f"image folder {root} not found (relative paths are tried in the working "
                                   f"directory, then in --data-dir)")
    return ImageFolderDataset(name, root, size=int_option(options, "size", 224, minimum=1),
                              resize=int_option(options, "resize", 0) or None,
                              hflip=bool(int_option(options, "flip", 1)),
                              num_workers=int_option(options, "workers", default_workers()))


@register_dataset("imagenet", num_classes=1000, input_size=(3, 224, 224))
def imagenet(root: Path, download: bool = False) -> ImageFolderDataset:
    """ILSVRC-2012 prepared as an ImageFolder tree at <data dir>/imagenet/{train,val} (it cannot be downloaded)."""
    folder = root / "imagenet"
    if not all((folder / sub).is_dir() for sub in ("train", "val")):
        raise DataUnavailableError(f"dataset imagenet not found in {root} (no imagenet/train and imagenet/val "
                                   f"class folders; it cannot be downloaded); pass --data-dir DIR where the files are")
    return ImageFolderDataset("imagenet", folder)

