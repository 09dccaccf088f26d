"""Regression-based channel pruning, "CP" (He, Zhang, Sun, Channel Pruning for Accelerating Very Deep Neural
Networks, ICCV 2017): per pruned layer, a LASSO on per-channel coefficients of the next conv's sampled output picks
the channels (prunectl/methods/lasso.py), then the next conv's whole kernel (and bias, where it has one) is refit by
least squares on the kept inputs.

As in the authors' released code, targets are the ORIGINAL model's outputs while the inputs come from the current,
partly pruned model, so each layer's refit also corrects the error that earlier pruned layers left. LASSO runs on
a subsample of `lasso_points` points (400 in the released cfgs.py) with every output channel of the consumer; the
refit uses all sampled points.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from prunectl.core.spec import Spec, check, helptext
from prunectl.errors import BadValueError
from prunectl.methods.base import Method, MethodFacts, PruneContext, PruneOutcome, register_method
from prunectl.methods.lasso import select
from prunectl.methods.layerwise import (
    Step,
    chosen_layers,
    kept_count,
    least_squares,
    prune_layers,
    reference,
)
from prunectl.methods.sampling import consumer_conv, default_draw, sample
from prunectl.models import ArchModel
from prunectl.structure import ChannelGroup, channel_groups, require

# VGG-16-5x (He et al. 2017, the released CP model; docs/architectures.md): conv1_1 ... conv4_3, conv5_x stay 512.
PRESETS: dict[str, list[int]] = {"vgg16-5x": [24, 22, 41, 51, 108, 89, 111, 184, 276, 228]}
VGG16_WIDTHS = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]


@dataclass(frozen=True)
class RegressionSettings(Spec):
    ratio: float | None = helptext("fraction of each pruned layer's channels KEPT (keeps int(C x ratio))",
                                   default=None)
    layer_widths: Mapping[str, int] = helptext("target kept channels per layer {name: width}, overriding `ratio`",
                                               default_factory=dict)
    preset: str | None = helptext("paper widths: vgg16-5x (VGG-16 conv1_1..conv4_3 of the CP 5x model)",
                                  default=None)
    layers: tuple[str, ...] = helptext(
        "channel groups to prune, front to back (default as thinet: VGG-16 conv1_1..conv4_3, ResNet bottlenecks "
        "conv1 and conv2, CIFAR ResNets each basic block's first conv)", default=())
    tolerance: float = helptext("LASSO search band: the support may exceed the target by floor(tolerance x "
                                "target) channels (the released code's rank_tol 0.1)", default=0.1)
    exact: bool = helptext("trim the LASSO support to the target width by |β| x column norm (false: keep the "
                           "whole support, up to the tolerance, as the released code does)", default=True)
    lasso_points: int = helptext("sampled points the LASSO uses, with all output channels (released code: 400)",
                                 default=400)
    sample_images: int | None = helptext("images drawn from the train split (default: 500; 10 per class for "
                                         "ImageNet-like data)", default=None)
    sample_positions: int | None = helptext("random output positions per image (default 10)", default=None)
    seed: int = helptext("seed of the image and position draw", default=0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "layer_widths", dict(self.layer_widths))
        object.__setattr__(self, "layers", tuple(str(n) for n in self.layers))
        check(self.ratio is not None or bool(self.layer_widths) or self.preset is not None,
              "regression: give ratio (the fraction kept, e.g. 0.5), layer_widths or preset")
        check(self.preset is None or (self.ratio is None and not self.layer_widths and not self.layers),
              "regression: a preset fixes the layers and widths; give it alone")
        check(self.preset is None or self.preset in PRESETS,
              f"regression: preset must be one of {', '.join(PRESETS)}, got {self.preset!r}")
        check(self.ratio is None or (isinstance(self.ratio, int | float) and 0 < self.ratio <= 1),
              f"regression: ratio is the fraction kept and must be in (0, 1], got {self.ratio!r}")
        for name, w in self.layer_widths.items():
            check(isinstance(w, int) and not isinstance(w, bool) and w >= 1,
                  f"regression: layer_widths['{name}'] must be a whole number >= 1, got {w!r}")
        check(0 <= self.tolerance <= 1, f"regression: tolerance must be in [0, 1], got {self.tolerance}")
        check(self.lasso_points >= 1, "regression: lasso_points must be >= 1")
        check(self.sample_images is None or self.sample_images >= 1, "regression: sample_images must be >= 1")
        check(self.sample_positions is None or self.sample_positions >= 1,
              "regression: sample_positions must be >= 1")


def target_widths(model: ArchModel, groups: list[ChannelGroup], settings: RegressionSettings) -> dict[str, int]:
    """Kept channels per pruned layer: the preset, or layer_widths over ratio (layers without either stay whole)."""
    if settings.preset is not None:
        convs = [g for g in channel_groups(model) if g.kind == "conv"]
        if model.family not in ("cifar_vgg", "imagenet_vgg") or [g.channels for g in convs] != VGG16_WIDTHS:
            raise BadValueError(f"regression: preset {settings.preset} is for an unpruned VGG-16")
        return {g.name: w for g, w in zip(convs, PRESETS[settings.preset], strict=False)}
    names = {g.name: g for g in groups}
    for name, w in settings.layer_widths.items():
        if name not in names:
            raise BadValueError(f"regression: layer_widths names '{name}', not one of the pruned layers "
                                f"({', '.join(list(names)[:8])})")
        if w > names[name].channels:
            raise BadValueError(f"regression: layer_widths['{name}'] = {w} is more than its {names[name].channels}")
    return {g.name: settings.layer_widths.get(g.name) or (
        kept_count(g.channels, settings.ratio) if settings.ratio is not None else g.channels) for g in groups}


def lasso_gram(patches: torch.Tensor, weight: torch.Tensor, target: torch.Tensor,
               points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """G = ZᵀZ, g = Zᵀy over the rows (point, output channel) of `points`: Z's column c is input channel c's
    contribution Σ_k W[f, c, k] · patch[c, k]; y the target output. Built 32 points at a time (bounded memory)."""
    c = weight.shape[1]
    w = weight.reshape(weight.shape[0], c, -1).float()
    gram = torch.zeros(c, c, dtype=torch.float64, device=weight.device)
    rhs = torch.zeros(c, dtype=torch.float64, device=weight.device)
    for start in range(0, len(points), 32):
        idx = points[start:start + 32]
        z = torch.einsum("pck,fck->pfc", patches[idx], w).reshape(-1, c).double()
        gram += z.T @ z
        rhs += z.T @ target[idx].reshape(-1).double()
    return gram, rhs, len(points) * weight.shape[0]


@register_method
class Regression(Method):
    """Channel pruning by LASSO selection and least-squares reconstruction of the next layer (He et al. 2017).

    >>> from prunectl.methods import get_method
    >>> get_method("regression").settings(preset="vgg16-5x").tolerance
    0.1
    """

    facts = MethodFacts(
        name="regression", structured=True, needs_data=True,
        summary="Channel pruning (CP): LASSO picks the channels, least squares refits the next conv",
        citation="He, Zhang, Sun, Channel Pruning for Accelerating Very Deep Neural Networks, ICCV 2017")
    settings = RegressionSettings

    def prune(self, model: ArchModel, settings: RegressionSettings, context: PruneContext) -> PruneOutcome:
        require(model, "channel-groups", method="regression")
        if context.data is None:
            raise BadValueError("regression samples activations and needs the training data")
        data = context.data
        if settings.preset is not None:
            layers = tuple(target_widths(model, [], settings))
        elif settings.layers or settings.ratio is not None:
            layers = settings.layers
        else:  # only layer_widths: those layers
            layers = tuple(settings.layer_widths)
        groups = chosen_layers(model, layers, "regression")
        widths = target_widths(model, groups, settings)
        draw = default_draw(data, settings.sample_images, settings.sample_positions, settings.seed)

        def step(current: ArchModel, group: ChannelGroup, consumer: str, keep: int) -> Step:
            # inputs from the current model, targets from the original one, at the same images and positions
            here, orig = sample([(current, consumer, True), (model, consumer, False)], data, draw,
                                explicit_positions=settings.sample_positions is not None, note=context.note)
            assert here.patches is not None
            layer = consumer_conv(current, consumer)
            weight = layer.weight.detach()
            original_bias = consumer_conv(model, consumer).bias
            target = orig.outputs + (0 if original_bias is None else original_bias.detach()[None, :])
            gen = torch.Generator().manual_seed(settings.seed)
            points = torch.randperm(len(target), generator=gen)[:min(settings.lasso_points, len(target))]
            # the LASSO fits the contributions to the target net of the current bias (zero where there is none)
            bias = 0 if layer.bias is None else layer.bias.detach()[None, :]
            gram, rhs, rows = lasso_gram(here.patches, weight, target - bias, points)
            support = select(gram, rhs, rows, keep, settings.tolerance, settings.exact)
            kept = support.kept
            x = here.patches[:, kept, :].reshape(len(target), -1)
            if layer.bias is not None:
                x = torch.cat([x, torch.ones(len(x), 1, device=x.device)], 1)
            what = f"regression {group.name}"
            solution = least_squares(x, target, what, context.note)  # (unknowns, out)
            k2 = weight.shape[2] * weight.shape[3]
            new_w = solution[:len(kept) * k2].T.reshape(weight.shape[0], len(kept), *weight.shape[2:])
            new_b = solution[-1] if layer.bias is not None else None
            sliced = here.patches[:, kept, :].reshape(len(target), -1) @ weight[:, kept].reshape(
                weight.shape[0], -1).T.float() + bias
            norm = float(target.norm()) or 1.0
            return Step(kept, new_w, new_b, {
                "alpha": support.alpha, "lasso_support": support.nnz, "in_tolerance": support.in_band,
                "samples": len(target), "rel_error_sliced": float((sliced - target).norm()) / norm,
                "rel_error": float((x @ solution - target).norm()) / norm})

        tag = f"{model.arch_name or model.family}-cp-{settings.preset or settings.ratio or 'custom'}"
        pruned, edit, facts = prune_layers(model, groups, widths, step, name=tag)
        ref = reference(model, edit, pruned, [f["consumer"] for f in facts])
        report: dict[str, Any] = {"widths": {n: len(v) for n, v in edit.keep.items()}, "layers": facts,
                                  "samples": draw.images * draw.positions}
        return PruneOutcome(pruned, None, report, edit, reference=ref)
