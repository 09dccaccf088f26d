"""Sparse Structure Selection (Huang & Wang, ECCV 2018): a scale λ on every residual branch, driven to exact zeros
in training by the authors' accelerated proximal gradient step; `prune` then removes the branches whose λ is 0.

Where λ lives: the behaviour owns λ (one scalar per branch, like the authors' `lambda_block`) and applies it by a
forward hook on the branch's last layer (`BlockGroup.output`), so the model's state_dict keys never change. After
the last epoch it folds λ into that layer's weight and bias and removes the hooks: the saved model.safetensors *is*
the λ-scaled network that was trained and evaluated (it loads strictly into the plain family), and a branch whose
λ reached 0 has an output layer of exact zeros: the mark `prune --method sss` reads. Nothing else has to carry λ.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, cast

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from prunectl.core.spec import Spec, check, helptext
from prunectl.errors import ArtifactError, BadValueError
from prunectl.methods.base import Method, MethodFacts, PruneContext, PruneOutcome, register_method
from prunectl.models import ArchModel
from prunectl.structure import (
    BlockGroup,
    StructureEdit,
    apply_edit,
    block_groups,
    has_provider,
    provider_for,
    require,
)
from prunectl.training.hooks import ParamGroup, TrainingBehaviour

_INF = float("inf")


@dataclass(frozen=True)
class SSSTraining(Spec):
    """SSS's training: the penalty γ‖λ‖₁ on the branch scales, applied by the proximal step (not by autograd)."""

    gamma: float = helptext("the L1 penalty on the branch scales λ; each step soft-thresholds λ by lr × lr_scale × "
                            "gamma (the authors' ImageNet ResNet-50: 0.01)", default=0.01)
    lr_scale: float = helptext("λ's learning rate as a multiple of the scheduled one (the authors' lr_mult: 1)",
                               default=1.0)
    momentum: float = helptext("μ of the accelerated proximal gradient update of λ (the authors use the "
                               "optimiser's momentum, 0.9)", default=0.9)

    def __post_init__(self) -> None:
        check(0 <= self.gamma < _INF, f"sss: gamma must be a finite number >= 0, got {self.gamma}")
        check(0 < self.lr_scale < _INF, f"sss: lr_scale must be a finite number > 0, got {self.lr_scale}")
        check(0 <= self.momentum < 1, f"sss: momentum must be in [0, 1), got {self.momentum}")


@dataclass(frozen=True)
class SSSSettings(Spec):
    """`prune --method sss` decides nothing itself: the training did (the branches whose λ reached 0)."""


def soft_threshold(x: torch.Tensor, alpha: float) -> torch.Tensor:
    """sign(x) · max(|x| − alpha, 0): the proximal operator of alpha·‖x‖₁."""
    return torch.sign(x) * torch.clamp(x.abs() - alpha, min=0.0)


def apg_update(scales: torch.Tensor, before: torch.Tensor, velocity: torch.Tensor, lr: float, gamma: float,
               momentum: float) -> None:
    """The authors' APGNAG step for λ (core/optimizer.py, their eqs. 10-12), in place, given `scales` =
    z = λ − lr·∇λ (the optimiser's plain step, wd 0, no momentum) and `before` = λ before that step:

        z ← S(z, lr·γ);   v ← μ·v + (z − λ);   λ ← max(z + μ·v, 0)

    With v starting at 0, the first step is z = S(λ₀ − lr·∇) and λ₁ = z + μ·(z − λ₀)."""
    with torch.no_grad():
        z = soft_threshold(scales, lr * gamma)
        velocity.mul_(momentum).add_(z - before)
        scales.copy_(torch.clamp(z + momentum * velocity, min=0.0))


def _scale_output(scales: torch.Tensor, index: int, module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
    return output * scales[index]


def fold_scales(model: nn.Module, blocks: list[BlockGroup], scales: torch.Tensor) -> None:
    """Multiply each branch's output layer (its BN's weight and bias, or its conv's) by its λ: the model then
    computes what it computed with the scales applied, and a λ of 0 leaves an output layer of exact zeros."""
    with torch.no_grad():
        for block, scale in zip(blocks, scales.detach(), strict=True):
            layer = model.get_submodule(block.output)
            for name in ("weight", "bias"):
                tensor = getattr(layer, name, None)
                if tensor is not None:
                    tensor.mul_(scale.to(tensor.dtype))


def branch_is_zero(model: nn.Module, block: BlockGroup) -> bool:
    """Whether `block`'s branch outputs exactly zero: its output layer's weight (and bias) are all 0, as a folded
    λ of 0 leaves them (and as `masked_model` marks a dropped branch)."""
    layer = model.get_submodule(block.output)
    tensors = [t for t in (getattr(layer, "weight", None), getattr(layer, "bias", None)) if t is not None]
    return bool(tensors) and all(bool(torch.all(cast(torch.Tensor, t) == 0)) for t in tensors)


class BranchScales(TrainingBehaviour):
    """One λ ≥ 0 per residual branch (every block, the first of each stage too), initialised at 1, multiplying the
    branch's output; in a parameter group of its own with weight decay 0, no momentum and the lr × `lr_scale`, so
    `optimizer.step()` makes the plain gradient step z = λ − lr·∇λ and `after_step` completes the APG update
    (`apg_update`). λ and the APG velocity are checkpointed; after the last epoch λ is folded into the model."""

    def __init__(self, settings: SSSTraining, blocks: list[BlockGroup]) -> None:
        self.settings, self.blocks = settings, blocks
        self.scales: nn.Parameter | None = None
        self.velocity: torch.Tensor | None = None
        self.folded = False
        self._before: torch.Tensor | None = None
        self._hooks: list[RemovableHandle] = []

    def param_groups(self, model: nn.Module) -> list[ParamGroup]:
        device = next(model.parameters()).device
        self.scales = nn.Parameter(torch.ones(len(self.blocks), device=device))
        self.velocity = torch.zeros(len(self.blocks), device=device)
        self._hooks = [model.get_submodule(b.output).register_forward_hook(partial(_scale_output, self.scales, i))
                       for i, b in enumerate(self.blocks)]
        return [ParamGroup([self.scales], name="sss-scales", weight_decay=0.0, lr_scale=self.settings.lr_scale,
                           momentum=0.0, nesterov=False)]

    def after_backward(self, model: nn.Module) -> None:
        self._before = self._scales().detach().clone()

    def after_step(self, model: nn.Module, lr: float) -> None:
        assert self._before is not None and self.velocity is not None
        s = self.settings
        apg_update(self._scales(), self._before, self.velocity, lr * s.lr_scale, s.gamma, s.momentum)

    def on_epoch_end(self, model: nn.Module, epoch: int, epochs: int) -> None:
        if epoch + 1 == epochs:  # the last epoch: evaluate and save the plain network that was trained
            fold_scales(model, self.blocks, self._scales())
            self._unhook()

    def state_dict(self) -> dict[str, torch.Tensor]:
        assert self.velocity is not None
        return {"scales": self._scales().detach().clone(), "velocity": self.velocity.clone(),
                "folded": torch.tensor(int(self.folded))}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        if set(state) != {"scales", "velocity", "folded"} or state["scales"].shape != self._scales().shape:
            raise ArtifactError(f"the checkpoint's SSS state ({sorted(state)}) does not fit this model's "
                                f"{len(self.blocks)} residual branches")
        with torch.no_grad():
            self._scales().copy_(state["scales"])
            cast(torch.Tensor, self.velocity).copy_(state["velocity"])
        if int(state["folded"]):
            self._unhook()

    def _scales(self) -> nn.Parameter:
        if self.scales is None:
            raise RuntimeError("BranchScales.param_groups must run first (the trainer calls it)")
        return self.scales

    def _unhook(self) -> None:
        for handle in self._hooks:
            handle.remove()
        self._hooks, self.folded = [], True


@dataclass(frozen=True)
class StageBlocks:
    """One stage in SSS's notation: its blocks, how many keep their residual branch, whether the first does."""

    stage: int  # 1-based, as the zoo writes it
    blocks: int
    kept: int
    first_kept: bool

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "blocks": self.blocks, "kept": self.kept, "first_kept": self.first_kept}


def stage_layout(model: ArchModel) -> list[StageBlocks] | None:
    """Per stage: (blocks whose residual branch remains, whether the stage's first block keeps it), the notation of
    the Rethinking paper's SSS models (docs/architectures.md); None for a family without removable blocks.

    Stages are the model's `layer1`, `layer2`, ... (the containers the structure providers name blocks in:
    `layer{stage + 1}.{index}`), so a stage whose every branch is gone still counts."""
    if not has_provider(model) or "removable-blocks" not in provider_for(model).offers:
        return None
    branched = {(b.stage, b.index) for b in block_groups(model)}
    out: list[StageBlocks] = []
    while isinstance(stage := getattr(model, f"layer{len(out) + 1}", None), nn.Sequential):
        s = len(out)
        out.append(StageBlocks(s + 1, len(stage), sum((s, i) in branched for i in range(len(stage))),
                               (s, 0) in branched))
    return out


def layout_notation(layout: list[StageBlocks]) -> str:
    """`[(0, False), (2, False), (5, False), (1, True)]`, as the zoo's SSS entries describe their stages."""
    return "[" + ", ".join(f"({s.kept}, {s.first_kept})" for s in layout) + "]"


def choose_drops(model: ArchModel, note: Any) -> tuple[list[BlockGroup], list[str]]:
    """The blocks whose branch is zero, less those a stage needs so as not to vanish: a stage whose every branch
    would go, its first block's included, and whose first block has an identity shortcut (no projection or
    downsampling layer: the stage would be identities only) keeps that first block. Returns (blocks to drop,
    names kept to hold a stage)."""
    blocks = block_groups(model)
    zero = [b for b in blocks if branch_is_zero(model, b)]
    held = []
    for stage in sorted({b.stage for b in blocks}):
        mine = [b for b in blocks if b.stage == stage]
        if all(b in zero for b in mine) and mine[0].first and mine[0].shortcut is None:
            zero.remove(mine[0])
            held.append(mine[0].name)
            note(f"sss: every branch of stage {stage + 1} has λ = 0 and the stage has no shortcut layer, so it "
                 f"would vanish; its first block {mine[0].name} is kept (its branch outputs zeros until trained)")
    return zero, held


@register_method
class SSSPruner(Method):
    """Sparse Structure Selection (Huang & Wang, ECCV 2018): train with `--method sss` (a scale λ per residual
    branch, L1-penalised by the proximal step), then `prune --method sss` removes every branch whose λ reached 0;
    the result is a plain network of the family with fewer blocks, equal to the λ-scaled one. A removed identity
    block disappears; a stage's first block keeps its projection (or parameter-free downsampling) shortcut.

    The paper puts λ on bottleneck branches (ResNet-50, pre-activation ResNet-164); on the CIFAR ResNets' basic
    blocks it is prunectl's extension. Per-group scales for ResNeXt's grouped convs are not implemented (no
    grouped-conv family is registered).
    """

    facts = MethodFacts(
        name="sss", structured=True, trains=True, per_seed_architecture=True,
        summary="Sparse Structure Selection: an L1-penalised scale per residual branch in training (proximal "
                "APG step), then the branches with scale 0 are removed",
        citation="Huang & Wang, Data-Driven Sparse Structure Selection for Deep Neural Networks, ECCV 2018")
    settings = SSSSettings
    training_settings = SSSTraining

    def training(self, settings: SSSTraining, model: ArchModel) -> BranchScales:
        require(model, "removable-blocks", method="sss")
        return BranchScales(settings, block_groups(model))

    def prune(self, model: ArchModel, settings: SSSSettings, context: PruneContext) -> PruneOutcome:
        require(model, "removable-blocks", method="sss")
        trained = context.training
        if trained is None or trained.method != self.name:
            how = "without a training method" if trained is None else f"with '{trained.method}'"
            raise BadValueError(f"sss removes the branches its training drove to zero, but this run was trained "
                                f"{how}; train with --method sss --set gamma=G first")
        gamma = trained.settings.get("gamma", SSSTraining().gamma)
        before = stage_layout(model)
        drops, held = choose_drops(model, context.note)
        if not drops:
            why = "only branches that hold their stage reached λ = 0" if held else "no residual branch reached λ = 0"
            context.note(f"sss: nothing removed: {why} (gamma={gamma}); train with a larger gamma")
        edit = StructureEdit(drop=tuple(b.name for b in drops))
        base = model.arch_name or model.family
        pruned = apply_edit(model, edit, name=f"{base}-sss" if drops else None)
        after = cast(list[StageBlocks], stage_layout(pruned))
        report: dict[str, Any] = {
            "removed": list(edit.drop), "held_for_stage": held,
            "blocks_before": sum(s.kept for s in cast(list[StageBlocks], before)),
            "blocks_kept": sum(s.kept for s in after),
            "stages": [s.to_dict() for s in after], "notation": layout_notation(after),
            "gamma": gamma,
        }
        return PruneOutcome(pruned, None, report, edit)
