"""Micro-benchmark: batched per-image crop/flip + normalise vs torchvision per-sample PIL transforms in a DataLoader.

Run: ``python benchmarks/bench_data.py [--threads N] [--workers 0 2]``. Prints microseconds per batch of 64.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from PIL import Image
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset
from torchvision import transforms

from prunectl.data import Augment, InMemoryDataset, load_dataset


def best_of(fn: Callable[[], object], repeats: int, inner: int) -> float:
    """Median over `repeats` rounds of the mean seconds per call of `fn` (after a warm-up round)."""
    for _ in range(inner):
        fn()
    rounds = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        rounds.append((time.perf_counter() - start) / inner)
    return statistics.median(rounds)


class PilImages(TorchDataset):
    """The classic pipeline: uint8 array → PIL image → RandomCrop(padding) [→ flip] → ToTensor → Normalize."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, ds: InMemoryDataset) -> None:
        self.images, self.labels = images.numpy(), labels
        steps: list[object] = [transforms.RandomCrop(images.shape[-1], padding=ds.augment.pad_crop)]
        if ds.augment.hflip:
            steps.append(transforms.RandomHorizontalFlip())
        steps += [transforms.ToTensor(), transforms.Normalize(ds.mean, ds.std)]
        self.transform = transforms.Compose(steps)
        self.mode = "L" if images.shape[1] == 1 else "RGB"

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image = self.images[i]
        image = image[0] if self.mode == "L" else image.transpose(1, 2, 0)
        return self.transform(Image.fromarray(image, self.mode)), int(self.labels[i])


def epoch_seconds_per_batch(batches: object) -> float:
    start, count = time.perf_counter(), 0
    for _x, _y in batches:  # type: ignore[attr-defined]
        count += 1
    return (time.perf_counter() - start) / count


def report(name: str, ds: InMemoryDataset, workers: list[int], repeats: int) -> None:
    images, labels = ds.tensors("train")
    generator = torch.Generator().manual_seed(0)
    index = torch.randperm(len(labels), generator=generator)[:64]
    batch = images.index_select(0, index)
    one = best_of(lambda: ds.normalise(ds.augment.apply(batch, generator)), repeats, 200)
    print(f"{name}: augment + normalise one batch of 64 {tuple(images.shape[1:])}: {one * 1e6:8.1f} us")
    ours = statistics.median(epoch_seconds_per_batch(ds.batches("train", 64, shuffle=True, augment=True, seed=s))
                             for s in range(repeats))
    print(f"{name}: prunectl batches, full epoch:                 {ours * 1e6:8.1f} us/batch")
    pil = PilImages(images, labels, ds)
    for w in workers:
        loader = DataLoader(pil, batch_size=64, shuffle=True, num_workers=w)
        theirs = epoch_seconds_per_batch(loader)
        print(f"{name}: DataLoader + PIL transforms, {w} workers:      {theirs * 1e6:8.1f} us/batch "
              f"({theirs / ours:.1f}x slower)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--workers", type=int, nargs="*", default=[0, 2], help="DataLoader worker counts to try")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    mnist5k = load_dataset("mnist5k")
    assert isinstance(mnist5k, InMemoryDataset)
    report("mnist5k", mnist5k, args.workers, args.repeats)
    rng = torch.Generator().manual_seed(0)
    cifar_like = InMemoryDataset(
        "cifar-shaped", train=(torch.randint(0, 256, (5000, 3, 32, 32), dtype=torch.uint8, generator=rng),
                               torch.zeros(5000, dtype=torch.int64)),
        test=(torch.zeros(1, 3, 32, 32, dtype=torch.uint8), torch.zeros(1, dtype=torch.int64)), num_classes=10,
        mean=(0.4914, 0.4822, 0.4465), std=(0.2023, 0.1994, 0.2010), augment=Augment(pad_crop=4, hflip=True))
    report("cifar-shaped", cifar_like, args.workers, args.repeats)


if __name__ == "__main__":
    main()
