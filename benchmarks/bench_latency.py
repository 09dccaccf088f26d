"""CPU inference latency of dense vs physically pruned models, next to their FLOPs ratio; prune/extract times.

    python benchmarks/bench_latency.py [--batch-sizes 1 16 64] [--repeats 20]

Pairs: VGG-16 vs VGG-16-A and ResNet-56 vs ResNet-56-B (the zoo's architectures, L1-norm paper), and VGG-19 vs
VGG-19 slimmed by 70 % (Network Slimming's global BN threshold; γ drawn at random here, so the widths differ from
a sparsity-trained net's). Latency: `prunectl.core.latency.measure` (median of `repeats` timed forward passes after
warm-up, eval mode, inference mode), torch's default threads. Then the time the `prune` and `extract-arch` stages take on VGG-19 and PreResNet-164
(slimming 70 % / 40 %), in process, on a run directory holding random weights.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from prunectl import engine, paths
from prunectl.core.flops import count
from prunectl.core.hparams import TrainSpec, slimming_training
from prunectl.core.io import save_tensors, write_json
from prunectl.core.latency import LatencySettings, measure
from prunectl.engine.zoo import get_entry
from prunectl.methods import PruneContext, get_method
from prunectl.models import ArchModel, build_model, create_model
from prunectl.runs.store import prepare_run

CIFAR = (3, 32, 32)


def latency_ms(model: torch.nn.Module, batch: int, repeats: int) -> float:
    """The median forward time, measured as `prunectl info --latency` and the prune stage measure it."""
    timed = measure(model, CIFAR, LatencySettings(batch_sizes=(batch,), warmup=3, repeats=repeats))
    return float(timed["rows"][0]["median_ms"])


def slimmed(name: str, ratio: float, seed: int = 0) -> tuple[ArchModel, ArchModel]:
    torch.manual_seed(seed)
    dense = create_model(name, input_size=CIFAR)
    with torch.no_grad():
        for m in dense.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.0, 1.0)
    method = get_method("slimming")
    context = PruneContext(training=slimming_training(1e-4))
    return dense, method.prune(dense, method.settings(ratio=ratio), context).model


def pairs() -> list[tuple[str, ArchModel, ArchModel]]:
    out = []
    for dense_name, pruned_name in (("vgg16-cifar10", "vgg16-a-cifar10"), ("resnet56-cifar10", "resnet56-b-cifar10")):
        out.append((f"{dense_name} vs {pruned_name}", build_model(get_entry(dense_name).arch),
                    build_model(get_entry(pruned_name).arch)))
    dense, small = slimmed("vgg19", 0.7)
    out.append(("vgg19 vs vgg19 slimmed 70 %", dense, small))
    return out


def stage_times(name: str, ratio: float) -> tuple[float, float, float]:
    """Seconds of the slimming method alone, the whole prune stage, and extract-arch, on a fake finished run."""
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        model = create_model(name, input_size=(1, 28, 28))  # mnist5k so the stage can evaluate offline
        spec = TrainSpec(arch=model.to_arch(), dataset="mnist5k", training=slimming_training(1e-4))
        run = prepare_run(spec, "train", Path(tmp) / "base")
        save_tensors(run.file(paths.MODEL), model.state_dict())
        write_json(run.file(paths.ARCH), model.to_arch().to_dict())
        write_json(run.file(paths.RESULT), {"final_acc": 0.0})
        method = get_method("slimming")
        start = time.perf_counter()
        method.prune(model, method.settings(ratio=ratio), PruneContext(training=slimming_training(1e-4)))
        method_s = time.perf_counter() - start
        start = time.perf_counter()
        pruned = engine.prune(run, engine.prune_spec(run, "slimming", {"ratio": ratio}), out=Path(tmp) / "p")
        prune_s = time.perf_counter() - start
        start = time.perf_counter()
        engine.extract_arch(pruned, Path(tmp) / "arch.json")
        return method_s, prune_s, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    print(f"CPU latency, torch {torch.__version__}, {torch.get_num_threads()} threads, input {CIFAR}")
    print(f"{'pair':<40} {'FLOPs ratio':>11} {'batch':>5} {'dense ms':>9} {'pruned ms':>9} {'latency ratio':>13}")
    for label, dense, small in pairs():
        ratio = count(dense, CIFAR).flops / count(small, CIFAR).flops
        for batch in args.batch_sizes:
            d, p = latency_ms(dense, batch, args.repeats), latency_ms(small, batch, args.repeats)
            print(f"{label:<40} {ratio:>10.2f}x {batch:>5} {d:>9.2f} {p:>9.2f} {d / p:>12.2f}x")
    print()
    print(f"{'stage timing':<28} {'method s':>9} {'prune stage s':>14} {'extract-arch s':>15}")
    for name, ratio in (("vgg19", 0.7), ("preresnet164", 0.4)):
        method_s, prune_s, extract_s = stage_times(name, ratio)
        print(f"{name + f' slimming {ratio:.0%}':<28} {method_s:>9.3f} {prune_s:>14.3f} {extract_s:>15.3f}")


if __name__ == "__main__":
    main()
