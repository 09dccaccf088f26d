"""Streamed ImageFolder trees (``imagefolder:PATH`` and ``imagenet``): the ImageNet protocol for large images, the
CIFAR-style one (native size and channels, pad + crop) for small ones."""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torch.utils.data import DataLoader, Sampler
from torch.utils.data import Dataset as TorchDataset
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import default_loader

from prunectl.data.augment import Augment, resized_crop_box
from prunectl.data.base import (
    SMALL_IMAGE_MAX,
    WHOLE,
    Dataset,
    ProtocolChoice,
    Shard,
    canonical_device,
    channel_stats,
    check_split,
    int_option,
    locate,
    one_line,
    parse_source,
    protocol_by_size,
    register_dataset,
)
from prunectl.errors import BadValueError, DataUnavailableError

PREFIX = "imagefolder:"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
Sample = tuple[str, int]
GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")
SAMPLED = 64  # image headers read to infer the tree's image size and channels
STATS_SAMPLE = 1024  # images decoded for a small-image tree's mean and std
HOLDS = "train/ and val/ (or test/), one folder of images per class"
# The options after the path (imagefolder:PATH?size=32&flip=1): what `prunectl datasets` documents and the loader
# accepts. Small images: at most 64 px a side (`SMALL_IMAGE_MAX`).
OPTIONS = {"size": "the network's input side S (default 224; small images: their own size)",
           "resize": "short side before the centre crop (default round(S x 256 / 224); small images: S)",
           "flip": "0 or 1: mirror in training (default 1; small images 0)",
           "pad": "small images only: zero-pad + random crop by N px (default S // 8)",
           "workers": "decoding processes (default min(4, CPUs))"}


def default_workers() -> int:
    return min(4, os.cpu_count() or 1)


class ImageFolderDataset(Dataset):
    """Image files decoded on the fly; `batches` has the same contract as the in-memory datasets'.

    `root` holds ``train/`` and ``val/`` (or ``test/``), each with one subfolder of images per class; test classes
    are mapped by name onto the train classes. What the images are decides how they are read (`small`; by default
    inferred from a sample of the train images' headers: at most 64 px a side is small):

    - large images, the ImageNet protocol (Liu et al. 2019, after He et al.'s ResNet recipe): RGB, training images
      get a RandomResizedCrop to `size` (224) and a flip, evaluation images a resize of the short side to `resize`
      (round(size × 256 / 224), i.e. 256) and a centre crop of `size`; ImageNet's mean and std.
    - small images, the CIFAR-style protocol: the images' own channels (greyscale stays one channel) and size (the
      median long side of the sample), short side resized to `size` and centre-cropped for both splits, then for
      training a zero-pad of `pad` (size // 8) + random crop back, no flip unless `hflip` (digits must not mirror);
      mean and std measured on up to 1,024 train images.

    Images are decoded in DataLoader workers, but every random draw comes from a generator seeded per image from
    the epoch's seed, so batches depend neither on the number of workers nor on torch's global RNG.
    """

    def __init__(self, name: str, root: Path, *, size: int | None = None, resize: int | None = None,
                 hflip: bool | None = None, pad: int | None = None, num_workers: int | None = None,
                 small: bool | None = None) -> None:
        self.root = root
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
        channels, side = _native_shape(train)
        self.small = side <= SMALL_IMAGE_MAX if small is None else small
        source = f"imagefolder {root}"
        if self.small:
            self.mode = "L" if channels == 1 else "RGB"
            self.size = size or side
            self.resize = resize or self.size
            augment = Augment(pad_crop=self.size // 8 if pad is None else pad, hflip=bool(hflip))
            mean, std = self._stats()
            protocol = protocol_by_size(source, (channels, side, side))
        else:
            if pad is not None:
                raise BadValueError(f"{source}: pad= is for small images; large ones get random-resized crops")
            self.mode, channels = "RGB", 3
            self.size = size or 224
            self.resize = resize or round(self.size * 256 / 224)
            augment = Augment(resized_crop=self.size, hflip=True if hflip is None else hflip)
            mean, std = IMAGENET_MEAN, IMAGENET_STD
            protocol = protocol_by_size(source, (3, side, side)) if small is None else \
                ProtocolChoice("imagenet", f"{name} is read with the ImageNet protocol")
        size = self.size
        super().__init__(name, len(classes), (channels, size, size), mean, std, augment,
                         notes={"source": str(root.resolve()), "test_folder": test_dir,
                                "eval": f"resize {self.resize} + centre crop {size}"}, protocol=protocol)

    def _stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        samples = self._samples["train"]
        step = max(1, len(samples) // STATS_SAMPLE)
        images = _Images(samples[::step][:STATS_SAMPLE], None, self.size, self.resize, self.mode)
        return channel_stats(torch.stack([images[(i, 0)][0] for i in range(len(images))]))

    def num_examples(self, split: str) -> int:
        check_split(split, 1)
        return len(self._samples[split])

    def samples(self, split: str) -> list[Sample]:
        """(file path, class index) of every image of a split, in ImageFolder's sorted order."""
        check_split(split, 1)
        return self._samples[split]

    def batches(self, split: str, batch_size: int, *, shuffle: bool, augment: bool, seed: int,
                device: torch.device | str = "cpu", shard: Shard = WHOLE) -> FolderBatches:
        check_split(split, batch_size)
        return FolderBatches(self, split, batch_size, shuffle, augment, seed, canonical_device(device), shard)


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
    """Yields (index, per-image seed), both drawn from one generator seeded with the epoch's seed; with a
    `shard`, only this rank's part of each global batch of `batch_size` (`Shard`), so a rank decodes only its
    own images and each image gets the seed it has in a one-process run."""

    def __init__(self, count: int, shuffle: bool, seed: int, batch_size: int = 1, shard: Shard = WHOLE) -> None:
        self.count, self.shuffle, self.seed, self.batch_size, self.shard = count, shuffle, seed, batch_size, shard

    def _positions(self) -> list[int]:
        if self.shard.world == 1:
            return list(range(self.count))
        bs = self.batch_size
        return [i for start in range(0, self.count, bs)
                for i in range(*self.shard.take(start, min(self.count, start + bs)).indices(self.count))]

    def __len__(self) -> int:
        return len(self._positions())

    def __iter__(self) -> Iterator[tuple[int, int]]:
        generator = torch.Generator().manual_seed(self.seed)
        order = torch.randperm(self.count, generator=generator) if self.shuffle else torch.arange(self.count)
        seeds = torch.randint(0, 2**62, (self.count,), generator=generator)
        pairs = list(zip(order.tolist(), seeds.tolist(), strict=True))
        return iter([pairs[i] for i in self._positions()])


def _native_shape(samples: list[Sample]) -> tuple[int, int]:
    """(channels, side) of a tree's images from the headers of up to `SAMPLED` of them, spread over the list:
    1 channel when every sampled image is greyscale, else 3; side is the median of their long sides."""
    if not samples:
        raise DataUnavailableError("the image folder's train/ has no images")
    step = max(1, len(samples) // SAMPLED)
    modes, sides = set(), []
    for path, _ in samples[::step][:SAMPLED]:
        try:
            with Image.open(path) as image:
                modes.add(image.mode)
                sides.append(max(image.size))
        except OSError as err:
            raise DataUnavailableError(f"cannot read image {path} ({one_line(err)})") from err
    return (1 if modes <= set(GREY_MODES) else 3), int(statistics.median_low(sides))


class _Images(TorchDataset):
    """Decodes one image to a uint8 (C, S, S) tensor: the random train transform or the deterministic eval one."""

    def __init__(self, samples: list[Sample], augment: Augment | None, size: int, resize: int,
                 mode: str = "RGB") -> None:
        self.samples, self.augment, self.size, self.resize, self.mode = samples, augment, size, resize, mode

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, seed = key
        path, target = self.samples[index]
        if self.mode != "RGB":
            with Image.open(path) as opened:
                image = opened.convert(self.mode)
        else:
            image = default_loader(path)
        if self.augment is None or not self.augment.resized_crop:
            image = TF.center_crop(TF.resize(image, self.resize), [self.size, self.size])
            if self.augment is not None and not self.augment.is_identity:  # small images: pad + crop, flip
                batch = TF.pil_to_tensor(image).unsqueeze(0)
                return self.augment.apply(batch, torch.Generator().manual_seed(seed))[0], target
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
    shard: Shard = WHOLE

    def __len__(self) -> int:
        if self.shard.world == 1:
            return math.ceil(self.dataset.num_examples(self.split) / self.batch_size)
        return math.ceil(len(self._sampler()) / (self.batch_size // self.shard.world))

    def _sampler(self) -> _SeededSampler:
        return _SeededSampler(self.dataset.num_examples(self.split), self.shuffle, self.seed, self.batch_size,
                              self.shard)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        ds = self.dataset
        images = _Images(ds.samples(self.split), ds.augment if self.augment else None, ds.size, ds.resize, ds.mode)
        loader = DataLoader(
            images,
            batch_size=self.batch_size // self.shard.world,
            sampler=self._sampler(),
            num_workers=ds.num_workers,
            pin_memory=self.device.type == "cuda",
            # The loader draws its workers' base seed from this generator, not from torch's global RNG.
            generator=torch.Generator().manual_seed(self.seed),
        )
        for x, y in loader:
            yield ds.normalise(x.to(self.device, non_blocking=True)), y.to(self.device, non_blocking=True)


def load_imagefolder(name: str, data_dir: str | Path | None = None) -> ImageFolderDataset:
    """Load ``imagefolder:PATH[?size=S&resize=R&flip=0|1&pad=P&workers=W]`` (see `ImageFolderDataset`).

    ``size`` is the network's input side (default: 224 for large images, the images' own for small ones);
    ``resize`` the short side before the centre crop; ``flip`` mirroring (default 1 for large images, 0 for
    small); ``pad`` the small images' crop padding; ``workers`` defaults to min(4, CPU count). A relative PATH is
    tried in the working directory, then in the data directory.
    """
    path, options = parse_source(name[len(PREFIX):], tuple(OPTIONS))
    root = locate(path, data_dir)
    if not root.is_dir():
        raise DataUnavailableError(f"image folder {root} not found (relative paths are tried in the working "
                                   f"directory, then in --data-dir)")
    return ImageFolderDataset(name, root, size=int_option(options, "size", 0, minimum=1) or None,
                              resize=int_option(options, "resize", 0) or None,
                              hflip=bool(int_option(options, "flip", 0)) if "flip" in options else None,
                              pad=int_option(options, "pad", 0) if "pad" in options else None,
                              num_workers=int_option(options, "workers", default_workers()))


@register_dataset("imagenet", num_classes=1000, input_size=(3, 224, 224), protocol="imagenet")
def imagenet(root: Path, download: bool = False) -> ImageFolderDataset:
    """ILSVRC-2012 prepared as an ImageFolder tree at <data dir>/imagenet/{train,val} (it cannot be downloaded)."""
    folder = root / "imagenet"
    if not all((folder / sub).is_dir() for sub in ("train", "val")):
        raise DataUnavailableError(f"dataset imagenet not found in {root} (no imagenet/train and imagenet/val "
                                   f"class folders; it cannot be downloaded); pass --data-dir DIR where the files are")
    return ImageFolderDataset("imagenet", folder, small=False)

