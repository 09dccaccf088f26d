"""Tiny datasets written in the real on-disk formats (CIFAR pickled batches, idx, .mat, ImageFolder trees)."""

from __future__ import annotations

import pickle  # the CIFAR format *is* pickled batches: the fixture writes what torchvision reads
import struct
from pathlib import Path

import numpy as np
from PIL import Image


def tiny(n: int, c: int, h: int, w: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, c, h, w), dtype=np.uint8), np.arange(n) % classes


def dump(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_cifar10(root: Path, per_batch: int = 4, n_test: int = 6) -> dict[str, np.ndarray]:
    """The real layout: rows of 3072 bytes (1024 R, 1024 G, 1024 B, row-major) and a 'labels' list."""
    folder = root / "cifar-10-batches-py"
    images, labels = [], []
    for i in range(1, 6):
        x, y = tiny(per_batch, 3, 32, 32, 10, seed=i)
        dump(folder / f"data_batch_{i}", {"batch_label": f"training batch {i} of 5", "labels": y.tolist(),
                                           "data": x.reshape(per_batch, 3072), "filenames": ["a.png"] * per_batch})
        images.append(x)
        labels.append(y)
    tx, ty = tiny(n_test, 3, 32, 32, 10, seed=9)
    dump(folder / "test_batch", {"batch_label": "testing batch 1 of 1", "labels": ty.tolist(),
                                  "data": tx.reshape(n_test, 3072), "filenames": ["b.png"] * n_test})
    dump(folder / "batches.meta", {"label_names": [f"c{i}" for i in range(10)], "num_vis": 3072})
    return {"x": np.concatenate(images), "y": np.concatenate(labels)}


def write_cifar100(root: Path) -> None:
    folder = root / "cifar-100-python"
    for name, n, seed in (("train", 12, 1), ("test", 5, 2)):
        x, y = tiny(n, 3, 32, 32, 100, seed)
        y = (y * 7) % 100
        dump(folder / name, {"filenames": ["a.png"] * n, "batch_label": name, "fine_labels": y.tolist(),
                              "coarse_labels": (y // 5).tolist(), "data": x.reshape(n, 3072)})
    dump(folder / "meta", {"fine_label_names": [f"f{i}" for i in range(100)],
                            "coarse_label_names": [f"c{i}" for i in range(20)]})


def write_idx(raw: Path, prefix: str, images: np.ndarray, labels: np.ndarray) -> None:
    """MNIST's idx format: big-endian magic (0x0803 images, 0x0801 labels), the dimensions, then raw bytes."""
    raw.mkdir(parents=True, exist_ok=True)
    n, h, w = images.shape
    (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 0x0803, n, h, w) + images.tobytes())
    (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x0801, n) + labels.astype(np.uint8).tobytes())


def write_svhn(root: Path) -> dict[str, np.ndarray]:
    from scipy.io import savemat

    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, n in (("train", 12), ("test", 3)):
        x = np.random.default_rng(n).integers(0, 256, (32, 32, 3, n), dtype=np.uint8)  # SVHN stores HWCN
        y = (np.arange(n) % 10 + 1).reshape(n, 1).astype(np.uint8)  # labels 1..10, 10 means the digit 0
        savemat(root / f"{split}_32x32.mat", {"X": x, "y": y})
        out[split] = x
    return out


def write_folder(root: Path, test_dir: str = "val", test_classes: tuple[str, ...] = ("cat", "dog"),
                 side: int = 12) -> None:
    """Random images of mixed sizes around `side` px (over 64: read as ImageNet-style data), one of them grey."""
    rng = np.random.default_rng(0)
    for split, classes, count in (("train", ("cat", "dog"), 3), (test_dir, test_classes, 2)):
        for label in classes:
            (root / split / label).mkdir(parents=True)
            for i in range(count):
                size = (side + 3 * i, side - 2 + 2 * i)
                pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
                image = Image.fromarray(pixels)
                (image.convert("L") if i == 1 else image).save(root / split / label / f"{i}.png")


# ---------- registry and front door ----------
