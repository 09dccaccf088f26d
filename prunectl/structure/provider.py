"""How a model family describes its structure to the structure layer, and the registry of those providers."""

from __future__ import annotations

import abc
from typing import Any, ClassVar

from prunectl.core.registry import Registry
from prunectl.errors import BadValueError
from prunectl.models import Arch, ArchModel
from prunectl.structure.groups import BlockGroup, ChannelGroup


class StructureProvider(abc.ABC):
    """One model family's structure: its channel groups, its removable blocks, and how a block is removed.

    Subclasses set `family` and `offers` (the capabilities the family can offer; a given model may still lack
    one, e.g. a VGG built without BN) and implement `channel_groups` and `examples`. Families with residual
    blocks implement `block_groups` and `remove_block`. Channel edits need nothing else: `apply_edit` slices the
    layers each group names and reads the new record back with the family's own `to_arch()`.
    """

    family: ClassVar[str]
    offers: ClassVar[frozenset[str]] = frozenset()

    @abc.abstractmethod
    def channel_groups(self, model: Any) -> list[ChannelGroup]:
        """Every channel group of `model` (prunable or not), in forward order."""

    def block_groups(self, model: Any) -> list[BlockGroup]:
        """Every block of `model` whose residual branch can be removed, in forward order."""
        return []

    def remove_block(self, model: Any, block: BlockGroup) -> None:
        """Replace `block`'s module in `model` (a working copy) by its shortcut, keeping the shortcut's layers."""
        raise BadValueError(f"{self.family} has no removable blocks")

    def apply(self, model: Any, keep: dict[str, list[int]], name: str | None) -> ArchModel | None:
        """Cut the channels of a checked edit (`keep`: the groups that change, kept indices) in the provider's
        own way and return the new model, or None (the default) to let `apply_edit` slice each group's layers
        and rebuild from the family's `to_arch()`. Traced library models cut through Torch-Pruning here."""
        return None

    @abc.abstractmethod
    def examples(self) -> dict[str, Arch]:
        """Small members of the family, with its odd cases (pruned selections, removed branches): the structure
        and method contract tests run on them."""


PROVIDERS: Registry[StructureProvider] = Registry("structure provider")


def register_provider(cls: type[StructureProvider]) -> type[StructureProvider]:
    PROVIDERS.add(cls.family, cls())
    return cls


def has_provider(model: ArchModel) -> bool:
    return model.family in PROVIDERS


def provider_for(model: ArchModel) -> StructureProvider:
    """The family's provider, or a one-line error naming the families that have one."""
    if model.family not in PROVIDERS:
        raise BadValueError(f"the structure layer (channel and block pruning) supports the families "
                            f"{', '.join(PROVIDERS)}; not '{model.family}'")
    return PROVIDERS.get(model.family)


def channel_groups(model: ArchModel) -> list[ChannelGroup]:
    """The channel groups of `model` (prunable or not), in forward order.

    >>> from prunectl.models import create_model
    >>> [g.name for g in channel_groups(create_model("smallcnn"))][:2]
    ['features.0', 'features.4']
    """
    return provider_for(model).channel_groups(model)


def block_groups(model: ArchModel) -> list[BlockGroup]:
    """The removable blocks of `model` (none for families without residual blocks)."""
    return provider_for(model).block_groups(model)
