"""Training behaviours: what a method does *during* training, added to the plain loop without the loop knowing it.

A behaviour is an object with a few optional hooks (all no-ops by default). The trainer calls them at fixed
points of every run; a method returns one from `Method.training(settings, model)`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from prunectl.errors import ArtifactError


@dataclass(frozen=True)
class ParamGroup:
    """Parameters that get their own optimiser settings (one SGD parameter group).

    `None` means "the run's value" (its `OptimSpec`); `lr_scale` multiplies the scheduled learning rate, so the
    group follows the schedule at its own scale. `params` may be the model's own parameters (they then leave the
    default group) or parameters the behaviour owns (put them on the model's device). A parameter may belong to
    one group only.
    """

    params: Sequence[nn.Parameter]
    name: str
    weight_decay: float | None = None
    lr_scale: float = 1.0
    momentum: float | None = None
    nesterov: bool | None = None


class TrainingBehaviour:
    """What a method adds to training. Override only the hooks you need; the rest do nothing.

    When the trainer calls them (for every step of every epoch)::

        param_groups(model)            once, when the trainer builds the optimiser (fresh run and resume)
        on_train_start(model)          before the first step of a fresh run (not on resume)
        loop: forward, loss.backward()
              after_backward(model)    gradients are there: unscaled fp32, before any optimiser step
              optimizer.step()
              after_step(model, lr)    lr: the scheduled learning rate of this epoch (before any lr_scale)
        on_epoch_end(model, epoch, epochs)
                                       after an epoch's last step, before its evaluation (epoch: 0-based;
                                       epochs: the run's total, so `epoch + 1 == epochs` is the last one)

    `state_dict()` returns the tensors the behaviour needs to continue exactly (a mask that changes, a counter
    as a 0-d tensor); they are written into every checkpoint and given back to `load_state_dict` on resume, so a
    resumed run is bit-identical to an uninterrupted one. Keep everything else a pure function of the settings
    and of the epoch.

    Under torchrun on GPUs the model's BatchNorm layers are SyncBatchNorm while it trains, which is not a
    BatchNorm2d subclass: match BatchNorm as `nn.modules.batchnorm._BatchNorm`. Gradients in `after_backward` are
    already averaged over the ranks, and every rank calls every hook, so the replicas stay identical.

    Example: an L2 pull of every BatchNorm shift towards zero, with the shifts in a group without weight decay::

        class ShiftPull(TrainingBehaviour):
            def __init__(self, strength: float) -> None:
                self.strength = strength

            def param_groups(self, model):
                shifts = [m.bias for m in model.modules() if isinstance(m, _BatchNorm)]
                return [ParamGroup(shifts, name="bn-shifts", weight_decay=0.0)]

            def after_backward(self, model):
                for m in model.modules():
                    if isinstance(m, _BatchNorm):
                        m.bias.grad.add_(m.bias.detach(), alpha=self.strength)

    A method then declares it (prunectl/methods/base.py)::

        training_settings = ShiftPullSettings          # a frozen Spec dataclass: {strength: float}
        def training(self, settings, model):
            return ShiftPull(settings.strength)
    """

    def param_groups(self, model: nn.Module) -> list[ParamGroup]:
        """Extra optimiser groups; every parameter of `model` not named here stays in the default group.

        Called once per trainer, after the model is on its device: the place to create parameters the
        behaviour owns (on that device); restore their values in `load_state_dict`."""
        return []

    def on_train_start(self, model: nn.Module) -> None:
        """Before the first step of a fresh run (and before `save_init` writes the initial weights)."""

    def after_backward(self, model: nn.Module) -> None:
        """A regulariser on the gradients (they are unscaled fp32 here)."""

    def after_step(self, model: nn.Module, lr: float) -> None:
        """A proximal or projection step after `optimizer.step()`; `lr` is the scheduled learning rate."""

    def on_epoch_end(self, model: nn.Module, epoch: int, epochs: int) -> None:
        """After the last step of 0-based `epoch` of `epochs`, before the epoch is evaluated and checkpointed."""

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors to checkpoint (names without dots are safest; they are prefixed in the file)."""
        return {}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Restore what `state_dict` returned (tensors come on the trainer's device)."""
        if state:
            raise ArtifactError(f"{type(self).__name__} keeps no state, but the checkpoint holds {sorted(state)}")


class KeepMasks(TrainingBehaviour):
    """Keep masked weights at zero: the weights are masked before the first step and after every step, and
    their gradients after every backward (so momentum never builds up on a pruned weight).

    `masks` maps parameter names to 0/1 tensors of the parameter's shape (a weight-pruned run's mask).
    """

    def __init__(self, masks: Mapping[str, torch.Tensor]) -> None:
        self.masks = dict(masks)
        self._bound: list[tuple[nn.Parameter, torch.Tensor]] | None = None

    def _pairs(self, model: nn.Module) -> list[tuple[nn.Parameter, torch.Tensor]]:
        if self._bound is None:  # the model is on its device by the first call; move the masks there once
            params = dict(model.named_parameters())
            unknown = sorted(set(self.masks) - set(params))
            if unknown:
                raise ArtifactError(f"the mask names parameters the model does not have: {', '.join(unknown)}")
            self._bound = [(params[n], m.to(params[n].device, params[n].dtype)) for n, m in self.masks.items()]
        return self._bound

    def _mask_weights(self, model: nn.Module) -> None:
        with torch.no_grad():
            for param, mask in self._pairs(model):
                param.mul_(mask)

    def on_train_start(self, model: nn.Module) -> None:
        self._mask_weights(model)

    def after_backward(self, model: nn.Module) -> None:
        for param, mask in self._pairs(model):
            if param.grad is not None:
                param.grad.mul_(mask)

    def after_step(self, model: nn.Module, lr: float) -> None:
        self._mask_weights(model)
