"""Tiny members of every model family for the structure and method-contract tests, with random BN statistics."""

from __future__ import annotations

import torch
from torch import nn

from prunectl.data.augment import Augment
from prunectl.data.base import InMemoryDataset
from prunectl.models import Arch, ArchModel, build_model
from prunectl.structure import PROVIDERS

# Families the structure layer has no provider for (weight-level methods only).
UNSTRUCTURED = {"mlp": Arch("mlp", {"hidden": [12, 8]}, 5, (1, 6, 6))}


def structure_examples() -> list[tuple[str, Arch]]:
    """(id, arch) for every example of every structure provider: a new provider's examples join by themselves."""
    return [(f"{family}-{label}", arch) for family in PROVIDERS
            for label, arch in PROVIDERS.get(family).examples().items()]


def small_families() -> list[tuple[str, Arch]]:
    """The first example of each provider, plus the families without one."""
    first = {}
    for key, arch in structure_examples():
        first.setdefault(arch.family, (key, arch))
    return [*first.values(), *UNSTRUCTURED.items()]


def randomised(arch: Arch, seed: int = 0) -> ArchModel:
    """A model in eval mode with random BN statistics, scales (> 0) and shifts (β ≠ 0) and random biases."""
    torch.manual_seed(seed)
    model = build_model(arch).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.0)
                m.bias.normal_(0, 0.2)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 1 / m.in_features**0.5)
                m.bias.normal_(0, 0.1)
            elif isinstance(m, nn.Conv2d) and m.bias is not None:
                m.bias.normal_(0, 0.1)
    return model


def tiny_dataset(arch: Arch, count: int = 16, seed: int = 0) -> InMemoryDataset:
    """Random images of the arch's input size and random labels (for methods that sample data)."""
    gen = torch.Generator().manual_seed(seed)
    c, h, w = arch.input_size

    def split() -> tuple[torch.Tensor, torch.Tensor]:
        images = torch.randint(0, 256, (count, c, h, w), generator=gen, dtype=torch.uint8)
        return images, torch.randint(0, arch.num_classes, (count,), generator=gen)

    return InMemoryDataset("tiny", train=split(), test=split(), num_classes=arch.num_classes, mean=[0.5] * c,
                           std=[0.25] * c, augment=Augment())
