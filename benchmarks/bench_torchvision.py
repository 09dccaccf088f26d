"""Benchmark: CPU latency of dense vs L1-norm-pruned torchvision ResNet-18 / MobileNetV2, next to the FLOPs ratio.

For each model and channel ratio (with and without round_to=8): fvcore FLOPs gain (dense / pruned), latency gain
at batch 1 / 16 / 64 (fastest of alternating dense / pruned rounds, eval mode, no grad), and the time to build the dependency graph, to prune,
and to rebuild the pruned model from its JSON record.

Run: ``python benchmarks/bench_torchvision.py [--threads N] [--size 224] [--ratios 0.3 0.5] [--batches 1 16 64]``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from prunectl.core.flops import count
from prunectl.methods import PruneContext, get_method
from prunectl.methods.l1norm import L1NormSettings
from prunectl.models import Arch, build_model, create_model
from prunectl.models.external import dependency_graph


def seconds(fn: Callable[[], object], repeats: int) -> float:
    """The fastest of `repeats` timed calls after a warm-up (the minimum is the least disturbed by other load)."""
    fn()
    rounds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        rounds.append(time.perf_counter() - start)
    return min(rounds)


def gain(dense: torch.nn.Module, pruned: torch.nn.Module, batch: int, size: int, repeats: int) -> float:
    """Dense / pruned seconds per batch, measured in alternation so that a change of machine load hits both."""
    d, p = [], []
    for _ in range(repeats):
        d.append(latency(dense, batch, size, 1))
        p.append(latency(pruned, batch, size, 1))
    return min(d) / min(p)


def latency(model: torch.nn.Module, batch: int, size: int, repeats: int) -> float:
    x = torch.randn(batch, 3, size, size)
    model.eval()
    with torch.no_grad():
        return seconds(lambda: model(x), repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--models", nargs="+", default=["resnet18", "mobilenet_v2"])
    parser.add_argument("--ratios", nargs="+", type=float, default=[0.3, 0.5])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 16, 64])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    size = (3, args.size, args.size)
    print(f"threads {args.threads}, input {size}; latency gain = dense / pruned seconds per batch")
    header = ["model", "ratio", "round_to", "FLOPs gain"] + [f"lat gain b{b}" for b in args.batches]
    print(" | ".join(header + ["graph s", "prune s", "rebuild s"]))
    for name in args.models:
        torch.manual_seed(0)
        dense = create_model(f"torchvision:{name}", num_classes=1000, input_size=size).eval()
        dense_flops = count(dense, size).flops
        graph_s = seconds(lambda d=dense: dependency_graph(d, size), 1)
        for ratio in args.ratios:
            for round_to in (1, 8):
                settings = L1NormSettings(ratio=ratio, round_to=round_to)
                start = time.perf_counter()
                pruned = get_method("l1-norm").prune(dense, settings, PruneContext()).model.eval()
                prune_s = time.perf_counter() - start
                record = pruned.to_arch().to_json()
                start = time.perf_counter()
                build_model(Arch.from_json(record))
                rebuild_s = time.perf_counter() - start
                flops_gain = dense_flops / count(pruned, size).flops
                gains = [gain(dense, pruned, b, args.size, args.repeats) for b in args.batches]
                row = [name, f"{ratio:.2f}", str(round_to), f"{flops_gain:.2f}"] + [f"{g:.2f}" for g in gains]
                print(" | ".join(row + [f"{graph_s:.2f}", f"{prune_s:.2f}", f"{rebuild_s:.2f}"]), flush=True)


if __name__ == "__main__":
    main()
