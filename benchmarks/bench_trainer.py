"""Training throughput: prunectl's trainer vs a seed-style loop (per-sample torchvision transforms in a DataLoader).

Same model, data (mnist5k train split), batch size, optimiser and per-sample augmentation (every image its own
random crop of the zero-padded image; no flips for digits). Prints images/s of both and their ratio. Both are
measured in steady state: the first epoch (allocator and oneDNN warm-up) is excluded and the median of the
remaining epochs' training time is taken; evaluation is excluded from both.

    python benchmarks/bench_trainer.py [--epochs 4] [--models lenet5 smallcnn] [--workers 0 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image
from torch.nn import functional as F
from torch.utils.data import DataLoader
from torchvision import transforms

from prunectl import paths
from prunectl.core.hparams import OptimSpec, ScheduleSpec
from prunectl.data import load_dataset
from prunectl.models import create_model
from prunectl.training.trainer import Trainer


class SeedStyleMNIST(torch.utils.data.Dataset):
    """What the seed's loaders do: one PIL image at a time through a torchvision transform pipeline."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, pad: int, mean: float, std: float) -> None:
        self.images, self.labels = images[:, 0].numpy(), labels.numpy()
        size = self.images.shape[-1]
        self.transform = transforms.Compose([transforms.RandomCrop(size, padding=pad), transforms.ToTensor(),
                                             transforms.Normalize((mean,), (std,))])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.transform(Image.fromarray(self.images[i], mode="L")), int(self.labels[i])


def seed_style(model_name: str, epochs: int, batch_size: int, workers: int) -> float:
    data = load_dataset("mnist5k")
    images, labels = data.tensors("train", "cpu")
    dataset = SeedStyleMNIST(images, labels, data.augment.pad_crop, data.mean[0], data.std[0])
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                        persistent_workers=workers > 0)
    torch.manual_seed(0)
    model = create_model(model_name)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    model.train()
    seconds = []
    for _ in range(epochs):
        start = time.perf_counter()
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        seconds.append(time.perf_counter() - start)
    return len(dataset) / statistics.median(seconds[1:])


def prunectl_trainer(model_name: str, epochs: int, batch_size: int) -> float:
    data = load_dataset("mnist5k")
    torch.manual_seed(0)
    model = create_model(model_name)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(model, data, OptimSpec(lr=0.05, batch_size=batch_size), ScheduleSpec(epochs=epochs), 0,
                          Path(tmp), device="cpu")
        trainer.fit()
        lines = (Path(tmp) / paths.METRICS).read_text().splitlines()
    seconds = [json.loads(line)["train_seconds"] for line in lines]  # training steps only, evaluation excluded
    return data.num_examples("train") / statistics.median(seconds[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4, help="at least 2: the first epoch is warm-up")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--models", nargs="+", default=["lenet5", "smallcnn"])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1],
                        help="DataLoader workers for the seed-style loop (the seed used 0 on CPU, 1 on GPU)")
    args = parser.parse_args()
    print(f"mnist5k train split, batch {args.batch_size}, {args.epochs} epochs, torch threads "
          f"{torch.get_num_threads()}")
    print(f"{'model':<10} {'seed-style loop':>26} {'prunectl trainer':>18} {'ratio':>7}")
    for name in args.models:
        ours = prunectl_trainer(name, args.epochs, args.batch_size)
        for workers in args.workers:
            theirs = seed_style(name, args.epochs, args.batch_size, workers)
            print(f"{name:<10} {theirs:>12.0f} img/s ({workers} workers) {ours:>12.0f} img/s {ours / theirs:>6.2f}x")


if __name__ == "__main__":
    main()
