"""The `ArchModel` base every model family extends, and the family and model registries."""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import ClassVar

from torch import nn

from prunectl.core.arch import ARCH_SCHEMA, Arch
from prunectl.core.registry import Registry
from prunectl.errors import BadValueError

__all__ = ["ARCH_SCHEMA", "FAMILIES", "MODELS", "Arch", "ArchModel", "register_family", "register_model"]


class ArchModel(nn.Module, metaclass=abc.ABCMeta):
    """Base of every model family: built from an `Arch`, and able to give the record back from its layers.

    A family subclass sets `family`, builds its layers in `__init__(arch)` (calling `super().__init__(arch)`
    first), applies its paper's initialisation in `reset_parameters()`, and implements `to_arch()` by *reading
    the current layer shapes* — so after channel surgery `to_arch()` describes the smaller network.

    >>> from prunectl.models import create_model
    >>> m = create_model("resnet20", num_classes=10)
    >>> type(m)(m.to_arch()).to_arch().same_structure(m.to_arch())
    True
    """

    family: ClassVar[str] = ""

    def __init__(self, arch: Arch) -> None:
        super().__init__()
        if arch.family != self.family:
            raise BadValueError(f"{type(self).__name__} builds family '{self.family}', not '{arch.family}'")
        self.num_classes = arch.num_classes
        self.input_size = arch.input_size
        self.arch_name = arch.name

    @abc.abstractmethod
    def to_arch(self) -> Arch:
        """The record of the network as it is now (read from the layers, not cached)."""

    @abc.abstractmethod
    def reset_parameters(self) -> None:
        """Re-draw all weights with the family's paper initialisation (uses torch's global RNG)."""


# family name -> class; model name -> function building that model's default Arch
FAMILIES: Registry[type[ArchModel]] = Registry("model family")
ArchFactory = Callable[..., Arch]
MODELS: Registry[ArchFactory] = Registry("model")


def register_family(cls: type[ArchModel]) -> type[ArchModel]:
    FAMILIES.add(cls.family, cls)
    return cls


def register_model(name: str) -> Callable[[ArchFactory], ArchFactory]:
    """Register a named model. The factory takes `num_classes`, `input_size` and keyword options."""
    return MODELS.register(name)
