"""What a model offers a method ("channel-groups", "removable-blocks", ...), asked instead of family allow-lists."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from prunectl.errors import BadValueError
from prunectl.models import ArchModel
from prunectl.structure.provider import PROVIDERS, has_provider, provider_for


@dataclass(frozen=True)
class Capability:
    """A structural property a method may need. `present(model)` says whether this model has it; `structural`
    ones come from a structure provider (so only families with one, and that declare it in `offers`, have it)."""

    name: str
    description: str
    present: Callable[[ArchModel], bool]
    structural: bool = True
    example: str = ""  # how a member of an offering family gets it, for the error on one that lacks it


def _conv_groups(model: ArchModel) -> bool:
    return any(g.prunable and g.kind == "conv" and g.producers
               and all(isinstance(model.get_submodule(p), nn.Conv2d) for p in g.producers)
               for g in provider_for(model).channel_groups(model))


def _bn_scaled(model: ArchModel) -> bool:
    # Network Slimming ranks every BN of the net under one threshold, so every BN's channels must be removable.
    norms = {n for g in provider_for(model).channel_groups(model) if g.prunable for n in g.norms}
    bns = [name for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
    return bool(bns) and all(name in norms for name in bns)


def _blocks(model: ArchModel) -> bool:
    return bool(provider_for(model).block_groups(model))


def _has(kind: type[nn.Module]) -> Callable[[ArchModel], bool]:
    return lambda model: any(isinstance(m, kind) for m in model.modules())


CAPABILITIES: dict[str, Capability] = {c.name: c for c in (
    Capability("channel-groups", "prunable groups of conv filters", _conv_groups),
    Capability("bn-scaled-channel-groups", "every BatchNorm's channels prunable, scored by its scale", _bn_scaled,
               example="built with BatchNorm layers"),
    Capability("removable-blocks", "residual branches that can be removed, leaving their shortcut", _blocks,
               example="with residual branches left"),
    Capability("conv-weights", "conv layers", _has(nn.Conv2d), structural=False),
    Capability("linear-weights", "linear layers", _has(nn.Linear), structural=False),
)}


def _capability(name: str) -> Capability:
    if name not in CAPABILITIES:
        raise ValueError(f"unknown capability {name!r} (known: {', '.join(CAPABILITIES)})")
    return CAPABILITIES[name]


def offers(model: ArchModel, capability: str) -> bool:
    """Whether `model` has `capability` (see `CAPABILITIES`)."""
    cap = _capability(capability)
    if cap.structural and (not has_provider(model) or capability not in provider_for(model).offers):
        return False
    return cap.present(model)


def model_capabilities(model: ArchModel) -> list[str]:
    """The capabilities `model` offers, in `CAPABILITIES` order."""
    return [name for name in CAPABILITIES if offers(model, name)]


def families_offering(capability: str) -> list[str]:
    """The families whose structure provider declares `capability` (sorted)."""
    return [family for family in PROVIDERS if capability in PROVIDERS.get(family).offers]


def require(model: ArchModel, capability: str, method: str) -> None:
    """Refuse `model` for `method` with a one-line error unless it offers `capability`.

    >>> from prunectl.models import create_model
    >>> require(create_model("densenet40"), "channel-groups", method="l1-norm")
    Traceback (most recent call last):
    ...
    prunectl.errors.BadValueError: l1-norm needs channel-groups (prunable groups of conv filters), which this \
densenet model lacks; families that offer it: cifar_resnet, cifar_vgg, imagenet_resnet, imagenet_vgg, lenet, module, preresnet, timm, \
torchvision
    """
    if offers(model, capability):
        return
    cap = _capability(capability)
    message = f"{method} needs {cap.name} ({cap.description}), which this {model.family} model lacks"
    families = families_offering(capability)
    if cap.structural and model.family in families:
        message += f" (other {model.family} configurations offer it{', e.g. ' + cap.example if cap.example else ''})"
    elif cap.structural:
        message += f"; families that offer it: {', '.join(families) or 'none'}"
    raise BadValueError(message)
