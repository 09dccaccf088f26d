"""Training augmentation: the frozen `Augment` record, a batched per-image crop/flip, and a seeded resized-crop box."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import torch

from prunectl.core.spec import Spec
from prunectl.errors import BadValueError


@dataclass(frozen=True)
class Augment(Spec):
    """Per-sample training augmentation of one dataset, as data (it goes into spec and result files).

    In-memory datasets apply `pad_crop` and `hflip` to a whole uint8 batch at once (`apply`); streamed ImageFolder
    data applies `resized_crop` and `hflip` per image in its loader workers. The CIFAR protocol is
    ``Augment(pad_crop=4, hflip=True)``; the ImageNet one ``Augment(resized_crop=224, hflip=True)``. As a `Spec`
    it round-trips through JSON: ``Augment.from_dict(a.to_dict()) == a``.
    """

    pad_crop: int = field(default=0, metadata={"help": "Zero-pad by this many pixels, then randomly crop back to "
                                                       "the original size (0: off)."})
    hflip: bool = field(default=False, metadata={"help": "Mirror left-right with probability 1/2."})
    resized_crop: int = field(default=0, metadata={"help": "RandomResizedCrop to this square size in pixels "
                                                           "(0: off; streamed ImageFolder data only)."})
    resized_crop_scale: tuple[float, float] = field(default=(0.08, 1.0), metadata={
        "help": "Range of the crop's area as a fraction of the image's."})
    resized_crop_ratio: tuple[float, float] = field(default=(3 / 4, 4 / 3), metadata={
        "help": "Range of the crop's aspect ratio (width / height)."})

    def __post_init__(self) -> None:
        if self.pad_crop < 0 or self.resized_crop < 0:
            raise BadValueError(f"pad_crop and resized_crop must be >= 0, got {self.pad_crop}, {self.resized_crop}")
        if self.pad_crop and self.resized_crop:
            raise BadValueError("choose either pad_crop or resized_crop, not both")
        lo, hi = self.resized_crop_scale
        if not 0 < lo <= hi <= 1:
            raise BadValueError(f"resized_crop_scale must satisfy 0 < low <= high <= 1, got {self.resized_crop_scale}")
        lo, hi = self.resized_crop_ratio
        if not 0 < lo <= hi:
            raise BadValueError(f"resized_crop_ratio must satisfy 0 < low <= high, got {self.resized_crop_ratio}")
        object.__setattr__(self, "resized_crop_scale", tuple(float(v) for v in self.resized_crop_scale))
        object.__setattr__(self, "resized_crop_ratio", tuple(float(v) for v in self.resized_crop_ratio))

    @property
    def is_identity(self) -> bool:
        return not (self.pad_crop or self.hflip or self.resized_crop)

    def apply(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Crop and flip a uint8 batch (B, C, H, W), each image with its own offset and flip, in one gather.

        The random draws come from `generator` (on the CPU, so a seed gives the same batch on every device); the
        gather runs where `images` live. Offset and flip are drawn jointly as one code per image, uniform over a
        table of all (2p+1)² × 2 crop maps, so the whole batch costs a handful of tensor ops and no Python loop.
        """
        if not (self.pad_crop or self.hflip) and not self.resized_crop:
            return images
        return self.apply_codes(images, self.draw_codes(len(images), generator).to(images.device))

    def draw_codes(self, count: int, generator: torch.Generator) -> torch.Tensor:
        """The crop-and-flip codes of `count` images, drawn from `generator` on the CPU (int64, shape (count,)).

        CPU draws are serial, so the codes of one epoch drawn at once equal those drawn batch by batch: a trainer
        can move a whole epoch's codes to the GPU in one copy instead of one blocking copy per batch."""
        if self.resized_crop:
            raise BadValueError("resized_crop applies to streamed (imagefolder) data, not to in-memory batches")
        span, flips = 2 * self.pad_crop + 1, 2 if self.hflip else 1
        return torch.randint(0, span * span * flips, (count,), generator=generator)

    def apply_codes(self, images: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Crop and flip a uint8 batch by the `draw_codes` codes of its images (on the images' device)."""
        if not (self.pad_crop or self.hflip):
            return images
        b, c, h, w = images.shape
        span, flips = 2 * self.pad_crop + 1, 2 if self.hflip else 1
        if span * span * flips * h * w <= _TABLE_LIMIT:
            rows = _crop_table(h, w, self.pad_crop, self.hflip, str(images.device)).index_select(0, codes)
        else:
            rows = _crop_index(codes, h, w, self.pad_crop, self.hflip)
        # One zero appended to each flat image plane is the whole zero-padding: off-image taps point at it.
        planes = torch.nn.functional.pad(images.reshape(b, c, h * w), (0, 1))
        return torch.gather(planes, 2, rows.view(b, 1, h * w).expand(b, c, h * w)).view(b, c, h, w)


_TABLE_LIMIT = 1 << 21  # int64 entries (16 MB): CIFAR's table has 162 × 1024, MNIST's 25 × 784


def _crop_index(codes: torch.Tensor, h: int, w: int, pad: int, flip: bool) -> torch.Tensor:
    """Flat source index of every output pixel of each crop code, shape (len(codes), H·W).

    Code (dy·(2p+1) + dx)·F + f is the crop at offset (dy, dx) of the zero-padded image, mirrored if f (F = 2
    with flips, else 1). Indices point into a plane of H·W pixels plus one zero at index H·W, where every tap
    that falls on the padding goes.
    """
    span, flips = 2 * pad + 1, 2 if flip else 1
    dy = (codes // (span * flips)).view(-1, 1, 1)
    dx = (codes // flips % span).view(-1, 1, 1)
    mirrored = (codes % flips).view(-1, 1, 1).bool()
    cols = torch.arange(w, device=codes.device).view(1, 1, w)
    rows = dy - pad + torch.arange(h, device=codes.device).view(1, h, 1)
    cols = dx - pad + torch.where(mirrored, w - 1 - cols, cols)
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    return torch.where(inside, rows * w + cols, h * w).reshape(-1, h * w)


@functools.lru_cache(maxsize=32)
def _crop_table(h: int, w: int, pad: int, flip: bool, device: str) -> torch.Tensor:
    """`_crop_index` of every code, built once per image shape and device."""
    codes = torch.arange((2 * pad + 1) ** 2 * (2 if flip else 1))
    return _crop_index(codes, h, w, pad, flip).to(device)


def resized_crop_box(width: int, height: int, augment: Augment,
                     generator: torch.Generator) -> tuple[int, int, int, int]:
    """(top, left, height, width) of a RandomResizedCrop box, as torchvision draws it but from `generator`.

    torchvision's own `RandomResizedCrop.get_params` reads the global RNG, which would make the crops depend on
    worker scheduling and on whatever else touched that RNG.
    """
    area = width * height
    lo, hi = augment.resized_crop_scale
    log_lo, log_hi = (math.log(r) for r in augment.resized_crop_ratio)
    for _ in range(10):
        u_area, u_ratio = torch.rand(2, generator=generator).tolist()
        target = area * (lo + (hi - lo) * u_area)
        aspect = math.exp(log_lo + (log_hi - log_lo) * u_ratio)
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
            return top, left, h, w
    # Fallback, as torchvision: the central crop closest to the allowed aspect ratios.
    ratio = width / height
    lo_r, hi_r = augment.resized_crop_ratio
    if ratio < lo_r:
        w, h = width, int(round(width / lo_r))
    elif ratio > hi_r:
        w, h = int(round(height * hi_r)), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w
