"""Activation sampling for the reconstruction methods (ThiNet, regression-based channel pruning).

For one consumer conv (the layer whose *input* channels a pruning step removes) the sampler draws, from the train
split without augmentation, a seeded set of images and a number of random output positions per image, and
returns at each position the consumer's input patch (unfolded with the consumer's kernel, stride, padding and
dilation, so `patch . weight` is the conv's output there) and the consumer's output. Several models can be tapped in
one pass at the same images and positions (regression takes its input patches from the partly pruned model and its
targets from the original one).

Memory bound: the result holds `samples x (C x kh x kw + F)` float32 values per tapped model (C, F: the consumer's
input and output channels; `samples = images x positions`), plus one batch of images and the activations of the
forward pass up to the consumer (the forward stops there). CIFAR-shaped VGG-16 at the defaults (500 images x 10
positions, widest consumer 512 x 3 x 3 -> 512) holds at most 5000 x 5120 x 4 B = 98 MiB per tapped model.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from prunectl.data import Dataset
from prunectl.errors import BadValueError

# Defaults (the papers' values where they fit 2 CPU cores). ThiNet: 10 images per class, 10 samples per image on
# ImageNet (Luo et al. 2017, released compress_model.py); CP: 5,000 images, 10 points each (He et al. 2017, released
# cfgs.py). CIFAR-shaped data take 500 images, which samples a CIFAR VGG-16 layer in a few seconds on 2 cores.
DEFAULT_POSITIONS = 10
DEFAULT_IMAGES = 500
IMAGENET_PER_CLASS = 10
BATCH = 100


@dataclass(frozen=True)
class Samples:
    """One tapped model's samples at one consumer: `patches` (samples, C, kh*kw) or None where not asked for, and
    `outputs` (samples, F), the consumer's output with its bias removed (so `outputs == patches . weight`)."""

    patches: torch.Tensor | None
    outputs: torch.Tensor


@dataclass(frozen=True)
class Draw:
    """Which images and how many positions: `images` total, drawn by a shuffle of the train split seeded by
    `seed`, with at most `per_class` of any label (None: no quota); `positions` per image."""

    images: int
    positions: int
    seed: int
    per_class: int | None = None


def default_draw(data: Dataset, images: int | None, positions: int | None, seed: int) -> Draw:
    """The draw for explicit settings (checked against the train split) or the defaults (capped to it):
    ImageNet-like data (>= 100 classes) 10 images per class, otherwise 500 images."""
    available = data.num_examples("train")
    if images is not None:
        if images > available:
            raise BadValueError(f"sample_images {images} is more than the {available} images of the train split")
        return Draw(images, positions or DEFAULT_POSITIONS, seed)
    if data.num_classes >= 100:
        return Draw(min(IMAGENET_PER_CLASS * data.num_classes, available), positions or DEFAULT_POSITIONS, seed,
                    per_class=IMAGENET_PER_CLASS)
    return Draw(min(DEFAULT_IMAGES, available), positions or DEFAULT_POSITIONS, seed)


class _Stop(Exception):
    """Raised by the hook once the consumer's input and output are taken: the rest of the forward is not needed."""


def consumer_conv(model: nn.Module, name: str) -> nn.Conv2d:
    """The plain (ungrouped) conv `name`, or a one-line error."""
    layer = model.get_submodule(name)
    if not isinstance(layer, nn.Conv2d) or layer.groups != 1 or isinstance(layer.padding, str):
        raise BadValueError(f"layer '{name}' is not a plain conv (reconstruction methods need a conv consumer)")
    return layer


def _images(data: Dataset, draw: Draw, device: torch.device) -> Iterator[torch.Tensor]:
    """The drawn images in batches of at most BATCH (the same ones, in the same order, for the same draw)."""
    taken, counts = 0, torch.zeros(data.num_classes, dtype=torch.long)
    for x, y in data.batches("train", BATCH, shuffle=True, augment=False, seed=draw.seed, device=device):
        if draw.per_class is not None:
            keep = torch.zeros(len(y), dtype=torch.bool)
            for i, label in enumerate(y.tolist()):
                if counts[label] < draw.per_class:
                    counts[label] += 1
                    keep[i] = True
            x = x[keep.to(x.device)]
        x = x[: draw.images - taken]
        if len(x):
            taken += len(x)
            yield x
        if taken >= draw.images:
            return


def sample(taps: Sequence[tuple[nn.Module, str, bool]], data: Dataset, draw: Draw, *,
           explicit_positions: bool = False,
           note: Callable[[str], None] = lambda message: None) -> list[Samples]:
    """Sample the consumer `name` of each tapped `(model, name, patches?)` at the same images and positions.

    Positions are drawn without replacement per image from a generator seeded by `draw.seed` and the consumer's
    name, so a run is reproducible. More positions than the output map has: an error where they were asked for
    (`explicit_positions`), else capped to the map (and `note` told). Models run in eval mode, without grad; their
    train/eval flag is restored.
    """
    first = taps[0][0]
    device = next(first.parameters()).device
    gen = torch.Generator().manual_seed(draw.seed * 2**32 + zlib.crc32(taps[0][1].encode()))
    chunks: list[list[tuple[torch.Tensor | None, torch.Tensor]]] = [[] for _ in taps]
    positions = draw.positions
    active = [0]  # the tap whose forward is running
    where: list[torch.Tensor] = []  # this batch's flat output positions, (images, positions), shared by the taps

    def hook_for(k: int, layer: nn.Conv2d, with_patches: bool):  # noqa: ANN202 - a torch hook
        def hook(_module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            nonlocal positions
            if active[0] != k:  # the same model may be tapped twice (before anything is pruned)
                return
            x = inputs[0]
            b, f, h, w = output.shape
            if k == 0:
                if positions > h * w:
                    if explicit_positions:
                        raise BadValueError(f"sample_positions {positions} is more than the {h}x{w} = {h * w} "
                                            f"positions of the output map of '{taps[0][1]}'")
                    note(f"{taps[0][1]}: {positions} positions per image capped to its {h}x{w} map")
                    positions = h * w
                where[:] = [torch.stack([torch.randperm(h * w, generator=gen)[:positions] for _ in range(b)])]
            idx = where[0].to(output.device)
            bias = layer.bias.view(1, f, 1) if layer.bias is not None else 0
            out = torch.gather((output.reshape(b, f, h * w) - bias), 2, idx[:, None, :].expand(b, f, -1))
            out = out.permute(0, 2, 1).reshape(-1, f)
            patches = None
            if with_patches:
                cols = F.unfold(x, layer.kernel_size, dilation=layer.dilation, padding=cast(Any, layer.padding),
                                stride=layer.stride)  # (b, C*kh*kw, h*w)
                cols = torch.gather(cols, 2, idx[:, None, :].expand(b, cols.shape[1], -1))
                c = layer.in_channels
                patches = cols.permute(0, 2, 1).reshape(-1, c, cols.shape[1] // c).float()
            chunks[k].append((patches, out.float()))
            raise _Stop
        return hook

    handles, modes = [], []
    try:
        for k, (model, name, with_patches) in enumerate(taps):
            modes.append(model.training)
            model.eval()
            handles.append(consumer_conv(model, name).register_forward_hook(
                hook_for(k, consumer_conv(model, name), with_patches)))
        with torch.no_grad():
            for x in _images(data, draw, device):
                for k, (model, _, _) in enumerate(taps):
                    active[0] = k
                    try:
                        model(x)
                    except _Stop:
                        pass
                    else:
                        raise RuntimeError("the sampled consumer was not reached by the forward pass")
    finally:
        for handle in handles:
            handle.remove()
        for (model, _, _), mode in zip(taps, modes, strict=False):
            model.train(mode)
    return [Samples(_joined([p for p, _ in c]), torch.cat([o for _, o in c])) for c in chunks]


def _joined(parts: list[torch.Tensor | None]) -> torch.Tensor | None:
    kept = [p for p in parts if p is not None]
    return torch.cat(kept) if kept else None
