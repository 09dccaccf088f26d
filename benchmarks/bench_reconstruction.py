"""Reconstruction methods (ThiNet, regression / CP) against L1-norm: time and peak memory to prune a CIFAR-shaped
VGG-16, and the accuracy straight after pruning (no fine-tuning) at the same per-layer widths on a quickly trained
mnist5k smallcnn, with each pruned layer's relative reconstruction error on test images.

    PYTHONPATH=$PWD python benchmarks/bench_reconstruction.py            # both parts, 2 threads
    PYTHONPATH=$PWD python benchmarks/bench_reconstruction.py --part time --images 500

Each timing runs in a fresh subprocess so its peak resident memory (getrusage ru_maxrss) is its own; the figure
includes the process (torch, the model, the data), so the model-only baseline is printed too.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from typing import Any

import torch
import torch.nn.functional as F

from prunectl.data import Dataset, load_dataset
from prunectl.data.augment import Augment
from prunectl.data.base import InMemoryDataset
from prunectl.methods import PruneContext, get_method
from prunectl.methods.layerwise import default_layers
from prunectl.models import ArchModel, create_model
from prunectl.structure import channel_groups

METHODS = {  # the same widths for all: r = 0.5 kept on the reconstruction methods' default layers
    "l1-norm": {},
    "thinet": {"ratio": 0.5},
    "thinet-forward": {"ratio": 0.5, "selection": "forward"},
    "regression": {"ratio": 0.5},
}


def settings(method: str, model: ArchModel, images: int | None) -> tuple[str, Any]:
    name = "thinet" if method.startswith("thinet") else method
    cls = get_method(name).settings
    if method == "l1-norm":  # l1-norm's ratio is the fraction removed; the same layers as the others
        return name, cls(layer_ratios={n: 0.5 for n in default_layers(model, "thinet")})
    extra = {} if images is None else {"sample_images": images}
    return name, cls(**METHODS[method], **extra)


def synthetic_cifar(count: int) -> InMemoryDataset:
    gen = torch.Generator().manual_seed(0)

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.randint(0, 256, (n, 3, 32, 32), generator=gen, dtype=torch.uint8),
                torch.randint(0, 10, (n,), generator=gen))

    return InMemoryDataset("synthetic-cifar", train=split(count), test=split(100), num_classes=10,
                           mean=[0.5] * 3, std=[0.25] * 3, augment=Augment())


def time_one(method: str, images: int) -> dict[str, Any]:
    """One method on a random CIFAR VGG-16 (run in its own process)."""
    torch.manual_seed(0)
    model = create_model("vgg16").eval()
    data = synthetic_cifar(images)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    name, s = settings(method, model, images)
    start = time.perf_counter()
    out = get_method(name).prune(model, s, PruneContext(data=data))
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"method": method, "seconds": seconds, "peak_rss_mib": peak / 1024, "before_mib": base_rss / 1024,
            "widths": list(out.report["widths"].values())}


def part_time(images: int, threads: int) -> None:
    print(f"## Pruning a CIFAR-shaped VGG-16 (conv1_1..conv4_3 at r = 0.5), {images} images x 10 positions, "
          f"{threads} threads")
    print("| method | seconds | peak RSS (MiB) | RSS before pruning (MiB) |")
    print("|---|---:|---:|---:|")
    for method in METHODS:
        out = subprocess.run([sys.executable, __file__, "--one", method, "--images", str(images),
                              "--threads", str(threads)], capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"| {method} | {r['seconds']:.1f} | {r['peak_rss_mib']:.0f} | {r['before_mib']:.0f} |", flush=True)


def train_quick(data: Dataset, epochs: int) -> ArchModel:
    torch.manual_seed(0)
    model = create_model("smallcnn")
    optim = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    for epoch in range(epochs):
        model.train()
        for x, y in data.batches("train", 64, shuffle=True, augment=True, seed=epoch):
            optim.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optim.step()
    return model.eval()


def accuracy(model: ArchModel, data: Dataset) -> float:
    model.eval()
    right = total = 0
    with torch.no_grad():
        for x, y in data.batches("test", 500, shuffle=False, augment=False, seed=0):
            right += int((model(x).argmax(1) == y).sum())
            total += len(y)
    return 100 * right / total


def consumer_outputs(model: ArchModel, names: list[str], x: torch.Tensor) -> dict[str, torch.Tensor]:
    seen: dict[str, torch.Tensor] = {}
    hooks = [model.get_submodule(n).register_forward_hook(
        lambda _m, _i, out, n=n: seen.__setitem__(n, out.detach())) for n in names]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return seen


def part_accuracy(epochs: int) -> None:
    data = load_dataset("mnist5k")
    model = train_quick(data, epochs)
    groups = {g.name: g for g in channel_groups(model)}
    layers = default_layers(model, "thinet")
    consumers = [groups[n].consumers[0].module for n in layers]
    produced = {p: g.name for g in groups.values() for p in g.producers}
    x = next(iter(data.batches("test", 500, shuffle=False, augment=False, seed=0)))[0]
    reference = consumer_outputs(model, consumers, x)
    print(f"## Straight after pruning: smallcnn on mnist5k trained {epochs} epochs "
          f"(test accuracy {accuracy(model, data):.2f} %), {', '.join(layers)} at r = 0.5")
    print("| method | acc. straight after pruning (%) | " +
          " | ".join(f"rel. error at {c}" for c in consumers) + " | seconds |")
    print("|---|---:|" + "---:|" * len(consumers) + "---:|")
    for method in METHODS:
        name, s = settings(method, model, None)
        start = time.perf_counter()
        out = get_method(name).prune(model, s, PruneContext(data=data))
        seconds = time.perf_counter() - start
        got = consumer_outputs(out.model, consumers, x)
        errors = []
        for c in consumers:  # compare the consumer's outputs that survive (its own filters may be pruned later)
            rows = out.edit.keep.get(produced.get(c, ""), list(range(reference[c].shape[1])))
            want = reference[c][:, rows]
            errors.append(float((got[c] - want).norm() / want.norm()))
        print(f"| {method} | {accuracy(out.model, data):.2f} | " + " | ".join(f"{e:.3f}" for e in errors) +
              f" | {seconds:.1f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["time", "accuracy", "both"], default="both")
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.one:
        print(json.dumps(time_one(args.one, args.images)))
        return
    if args.part in ("accuracy", "both"):
        part_accuracy(args.epochs)
    if args.part in ("time", "both"):
        part_time(args.images, args.threads)


if __name__ == "__main__":
    main()
