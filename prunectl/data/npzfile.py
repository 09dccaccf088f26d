"""User datasets from one .npz file (``npz:PATH[?pad=N&flip=0|1]``), held in memory like the built-in sets."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from prunectl.core import limits
from prunectl.data.augment import Augment
from prunectl.data.base import (
    InMemoryDataset,
    channel_stats,
    int_option,
    locate,
    one_line,
    parse_source,
    protocol_by_size,
    stratified_split,
)
from prunectl.errors import BadValueError, DataUnavailableError

PREFIX = "npz:"
NPZ_SPLIT_SEED = 0
NPZ_TEST_FRACTION = 0.2
HOLDS = ("arrays images (uint8: N,H,W or N,H,W,C or N,C,H,W) and labels; optional test_images/test_labels, "
         "else a fixed stratified 80/20 split")
# The options after the path (npz:PATH?pad=2&flip=1): what `prunectl datasets` documents and the loader accepts.
OPTIONS = {"pad": "zero-pad by N px, then a random crop back (default min(H, W) // 8)",
           "flip": "0 or 1: mirror left-right in training (default 0: digits and text must not mirror)"}


def load_npz(name: str, data_dir: str | Path | None = None) -> InMemoryDataset:
    """Load ``npz:PATH[?pad=N&flip=0|1]``; a relative PATH is tried in the working directory, then the data dir.

    The file holds ``images`` — uint8, (N,H,W), (N,H,W,C) or (N,C,H,W) with at most 4 channels — and integer
    ``labels`` (N,) in 0..K−1. Optional ``test_images``/``test_labels`` are the test split; without them a fixed
    stratified 80/20 split is taken (`stratified_split`, seed 0: per class, the first 20 %, rounded half up, of a
    seeded permutation go to test). Mean and std come from the train split (rounded to 4 places). Augmentation:
    zero-pad by min(H, W) // 8 pixels then a random crop back (4 for 32×32, as CIFAR), no flip unless ``flip=1``
    (digits and text must not mirror); ``pad=N`` overrides the padding. Training protocol: CIFAR-style for images
    of at most 64 px a side, ImageNet's for larger ones (`protocol_by_size`).
    """
    path_text, options = parse_source(name[len(PREFIX):], tuple(OPTIONS))
    path = locate(path_text, data_dir)
    arrays = _read(path)
    train_x = _to_nchw(arrays["images"], "images", path)
    train_y = _labels(arrays["labels"], len(train_x), "labels", path)
    if "test_images" in arrays:
        test_x = _to_nchw(arrays["test_images"], "test_images", path)
        test_y = _labels(arrays["test_labels"], len(test_x), "test_labels", path)
        if test_x.shape[1:] != train_x.shape[1:]:
            raise BadValueError(f"{path}: test_images are {test_x.shape[1:]} (C,H,W) but images are "
                                f"{train_x.shape[1:]}")
        split = "the file's test_images/test_labels"
    else:
        train_idx, test_idx = stratified_split(train_y, NPZ_TEST_FRACTION, NPZ_SPLIT_SEED)
        train_x, train_y, test_x, test_y = train_x[train_idx], train_y[train_idx], train_x[test_idx], train_y[test_idx]
        split = f"fixed stratified 80/20, seed {NPZ_SPLIT_SEED}"
    if len(train_x) == 0:
        raise BadValueError(f"{path}: the train split is empty")
    if len(test_x) == 0:
        raise BadValueError(f"{path}: the test split is empty (give test_images/test_labels with at least one image, "
                            "or enough images per class for the 80/20 split)")
    train = torch.from_numpy(np.ascontiguousarray(train_x)), torch.from_numpy(train_y)
    test = torch.from_numpy(np.ascontiguousarray(test_x)), torch.from_numpy(test_y)
    mean, std = channel_stats(train[0])
    _, h, w = train_x.shape[1:]
    augment = Augment(pad_crop=int_option(options, "pad", min(h, w) // 8),
                      hflip=bool(int_option(options, "flip", 0)))
    num_classes = int(max(train_y.max(initial=0), test_y.max(initial=0))) + 1
    dataset = InMemoryDataset(name, train=train, test=test, num_classes=num_classes, mean=mean, std=std,
                              augment=augment, notes={"source": str(path.resolve()), "split": split})
    dataset.protocol = protocol_by_size(f"npz {path}", train[0].shape[1:])
    return dataset


def _read(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise DataUnavailableError(f"npz file {path} not found (relative paths are tried in the working directory, "
                                   f"then in --data-dir)")
    limits.check_npz_size(path)  # before decompressing anything: a tiny file can declare huge arrays
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise DataUnavailableError(f"could not read {path} as .npz ({one_line(err)})") from err
    for key in ("images", "labels"):
        if key not in arrays:
            raise BadValueError(f"{path} has no '{key}' array (found: {', '.join(sorted(arrays)) or 'none'})")
    if ("test_images" in arrays) != ("test_labels" in arrays):
        raise BadValueError(f"{path}: give both test_images and test_labels, or neither")
    return arrays


def _to_nchw(images: np.ndarray, key: str, path: Path) -> np.ndarray:
    """uint8 images in any of the three accepted layouts → (N,C,H,W)."""
    if images.dtype != np.uint8:
        raise BadValueError(f"{path}: '{key}' must be uint8 0..255, got {images.dtype} "
                            f"(convert with (x * 255).round().astype(np.uint8))")
    if images.ndim == 3:
        return images[:, None]
    if images.ndim == 4:
        first, last = images.shape[1], images.shape[3]
        if last <= 4 < first:
            return images.transpose(0, 3, 1, 2)
        if first <= 4 < last:
            return images
    raise BadValueError(f"{path}: '{key}' has shape {images.shape}; expected (N,H,W), (N,H,W,C) or (N,C,H,W) "
                        f"with 1 to 4 channels and images larger than 4 pixels")


def _labels(labels: np.ndarray, count: int, key: str, path: Path) -> np.ndarray:
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1 or len(labels) != count:
        raise BadValueError(f"{path}: '{key}' has shape {labels.shape} but there are {count} images")
    if not np.issubdtype(labels.dtype, np.integer):
        raise BadValueError(f"{path}: '{key}' must be integers, got {labels.dtype}")
    if count and labels.min() < 0:
        raise BadValueError(f"{path}: '{key}' must be class indices >= 0, found {labels.min()}")
    if count and int(labels.max()) >= limits.current().classes:  # the label decides num_classes: bound it
        raise limits.exceeded(f"the largest label in '{key}' of {path}", int(labels.max()), "classes",
                              limits.current().classes)
    return labels.astype(np.int64)
