"""GPU training speed: a seed-style fp32 loop vs prunectl's trainer, each fast-path optimisation alone, and all.

VGG-19 and ResNet-56 (the paper's CIFAR models) on CIFAR-shaped synthetic data: 50,000 random 3×32×32 uint8
images in 10 classes with the CIFAR augmentation (pad 4 + crop, flip). Rows:

    seed loop       what the seed repositories do: CPU tensors through a DataLoader with per-sample torchvision
                    crop/flip, `.cuda()` per batch, NCHW, fp32, `loss.item()` every step
    trainer fp32    prunectl's Trainer with the data on the GPU, NCHW weights
    +channels-last  the trainer's default layout for conv nets
    +bf16           bf16 autocast (parameters, gradients and optimiser state stay fp32)
    +compile        torch.compile of the model
    all             channels-last + bf16 + compile

Each row: one warm-up epoch on 4,096 images (allocator, cuDNN autotuning, compilation), then one timed epoch
of all 50,000; epoch seconds and images/s of the training steps (evaluation excluded), and the host
synchronisations the trainer's timed epoch made (counted with torch.cuda.set_sync_debug_mode("warn"); a few
per epoch, none per step).

    python benchmarks/bench_gpu.py [--models vgg19 resnet56] [--batch-sizes 64 512] [--json out.json]
    python benchmarks/bench_gpu.py --smoke     # one tiny batch of every path on the CPU (what the tests run)

Without a CUDA device it prints "no CUDA device: skipped", runs the smoke and exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset
from torchvision.transforms import v2

from prunectl.core.hparams import OptimSpec, ScheduleSpec
from prunectl.data import Augment, InMemoryDataset
from prunectl.models import create_model
from prunectl.training import precision as precision_module
from prunectl.training.trainer import Trainer

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


@dataclass(frozen=True)
class Variant:
    """One row of the table: a trainer configuration (or the seed loop)."""

    label: str
    channels_last: bool = False
    precision: str = "fp32"
    compile: bool = False
    seed_loop: bool = False


PATHS = (
    Variant("seed loop", seed_loop=True),
    Variant("trainer fp32"),
    Variant("+channels-last", channels_last=True),
    Variant("+bf16", precision="bf16"),
    Variant("+compile", compile=True),
    Variant("all", channels_last=True, precision="bf16", compile=True),
)


def synthetic(images: int, seed: int = 0) -> InMemoryDataset:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (images, 3, 32, 32), dtype=torch.uint8, generator=generator)
    y = torch.randint(0, 10, (images,), generator=generator)
    return InMemoryDataset(f"synthetic-cifar-{images}", train=(x, y), test=(x[:256], y[:256]), num_classes=10,
                           mean=CIFAR_MEAN, std=CIFAR_STD, augment=Augment(pad_crop=4, hflip=True))


def seed_loop_epoch(model: torch.nn.Module, data: InMemoryDataset, batch_size: int, device: torch.device,
                    workers: int) -> float:
    """One epoch as the seed code trains: per-sample transforms in DataLoader workers, a copy per batch."""
    images, labels = data.tensors("train", "cpu")
    transform = v2.Compose([v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip(), v2.ToDtype(torch.float32, scale=True),
                            v2.Normalize(CIFAR_MEAN, CIFAR_STD)])
    dataset = _Transformed(TensorDataset(images, labels), transform)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                        pin_memory=device.type == "cuda")
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    model.train()
    _sync(device)
    start = time.perf_counter()
    total = 0.0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        total += loss.item()  # the seed's running loss: a host synchronisation every step
    _sync(device)
    return time.perf_counter() - start


class _Transformed(torch.utils.data.Dataset):
    def __init__(self, base: TensorDataset, transform: v2.Compose) -> None:
        self.base, self.transform = base, transform

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.base[i]
        return self.transform(x), y


def trainer_epoch(trainer: Trainer, data: InMemoryDataset, epoch: int, device: torch.device,
                  count_syncs: bool) -> tuple[float, int]:
    """Seconds of one training epoch of `trainer` on `data` (its private `_train_epoch`: steps only, no
    evaluation or checkpoint), and the host synchronisations it made (when counted, CUDA only)."""
    trainer.data = data
    _sync(device)
    with _sync_counter(count_syncs and device.type == "cuda") as syncs:
        start = time.perf_counter()
        trainer._train_epoch(epoch)
        _sync(device)
        seconds = time.perf_counter() - start
    return seconds, len(syncs)


@contextlib.contextmanager
def _sync_counter(enabled: bool) -> Iterator[list[warnings.WarningMessage]]:
    if not enabled:
        yield []
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield caught
        finally:
            torch.cuda.set_sync_debug_mode("default")
            caught[:] = [w for w in caught if "synchroniz" in str(w.message)]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(model_name: str, path: Variant, batch_size: int, device: torch.device, warm: InMemoryDataset,
            full: InMemoryDataset, workers: int) -> dict:
    torch.manual_seed(0)
    model = create_model(model_name).to(device)
    if path.seed_loop:
        if warm is not full:
            seed_loop_epoch(model, warm, batch_size, device, workers)
        seconds, syncs = seed_loop_epoch(model, full, batch_size, device, workers), None
    else:
        with tempfile.TemporaryDirectory() as tmp:
            trainer = Trainer(model, warm, OptimSpec(lr=0.1, batch_size=batch_size), ScheduleSpec(epochs=2), 0,
                              Path(tmp), device=device, precision=path.precision, compile=path.compile)
            if not path.channels_last:  # the trainer makes conv nets channels-last; undo it for this row
                trainer.model.to(memory_format=torch.contiguous_format)
            if warm is not full:
                trainer_epoch(trainer, warm, 0, device, count_syncs=False)
            seconds, syncs = trainer_epoch(trainer, full, 1, device, count_syncs=True)
            syncs = syncs if device.type == "cuda" else None
    images = full.num_examples("train")
    return {"model": model_name, "path": path.label, "batch_size": batch_size, "epoch_seconds": round(seconds, 3),
            "images_per_second": round(images / seconds, 1), "host_syncs": syncs}


def table(rows: list[dict]) -> str:
    lines = [f"{'model':<10} {'batch':>5}  {'path':<16} {'epoch s':>8} {'img/s':>10} {'vs seed':>8} {'syncs':>6}"]
    for row in rows:
        base = next(r for r in rows if r["model"] == row["model"] and r["batch_size"] == row["batch_size"]
                    and r["path"] == PATHS[0].label)
        ratio = row["images_per_second"] / base["images_per_second"]
        syncs = "-" if row["host_syncs"] is None else str(row["host_syncs"])
        lines.append(f"{row['model']:<10} {row['batch_size']:>5}  {row['path']:<16} {row['epoch_seconds']:>8.2f} "
                     f"{row['images_per_second']:>10,.0f} {ratio:>7.2f}x {syncs:>6}")
    return "\n".join(lines)


def smoke(models: list[str]) -> list[dict]:
    """Every path for one tiny batch on the CPU, so this script is exercised where no GPU is."""
    precision_module.COMPILE_BACKEND = "eager"  # compiled code generation would take minutes on a small CPU
    torch.set_num_threads(1)  # tiny batches: more threads only wait on each other
    data = synthetic(2)
    return [measure(name, path, 2, torch.device("cpu"), data, data, workers=0)
            for name in models for path in PATHS]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["vgg19", "resnet56"])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64], help="64 is the paper's CIFAR batch")
    parser.add_argument("--images", type=int, default=50_000, help="images in the timed epoch")
    parser.add_argument("--workers", type=int, default=8, help="DataLoader workers of the seed loop")
    parser.add_argument("--smoke", action="store_true", help="one tiny batch of every path on the CPU")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    if args.smoke or not torch.cuda.is_available():
        if not args.smoke:
            print("no CUDA device: skipped (running the CPU smoke of every path instead)")
        rows = smoke(args.models)
        print(table(rows))
        print("smoke: ok")
        return 0
    device = torch.device("cuda", torch.cuda.current_device())
    print(f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}, synthetic CIFAR {args.images:,} images")
    warm, full = synthetic(4096, seed=1), synthetic(args.images)
    rows: list[dict] = []
    # Compiled rows last (compilation takes the longest): should a time limit cut the run, the rest is printed.
    for path in sorted(PATHS, key=lambda p: p.compile):
        for name in args.models:
            for batch_size in args.batch_sizes:
                rows.append(measure(name, path, batch_size, device, warm, full, args.workers))
                print(table(rows).splitlines()[-1], flush=True)
    order = {(m, b, p.label): i for i, (m, b, p) in
             enumerate((m, b, p) for m in args.models for b in args.batch_sizes for p in PATHS)}
    rows.sort(key=lambda r: order[(r["model"], r["batch_size"], r["path"])])
    print()
    print(table(rows))
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
