"""The structure layer: what a model's channels and blocks are, and one edit that removes some of them.

A structure provider per model family lists its channel groups (channels removed together, with their producers,
norms, every consumer and what ties them) and its block groups (residual branches that can be removed). A method
asks `require(model, capability, method=...)` whether a model offers what it needs, picks a `StructureEdit`
(kept channels per group, blocks to drop) and gets the physically smaller model from `apply_edit`, whose function
equals `masked_model(model, edit)`.
"""

from prunectl.core.registry import import_package_modules
from prunectl.structure.capabilities import (
    CAPABILITIES,
    Capability,
    families_offering,
    model_capabilities,
    offers,
    require,
)
from prunectl.structure.edit import StructureEdit, apply_edit, masked_model
from prunectl.structure.groups import BlockGroup, ChannelGroup, Consumer, KeepMap
from prunectl.structure.provider import (
    PROVIDERS,
    StructureProvider,
    block_groups,
    channel_groups,
    has_provider,
    provider_for,
    register_provider,
)
from prunectl.structure.scores import bn_scales, filter_l1_norms, top_indices

# Every module of this package is imported, and so registers its family providers (plain, resnet, selected, ...).
import_package_modules(__name__, __path__)

__all__ = [
    "CAPABILITIES",
    "PROVIDERS",
    "BlockGroup",
    "Capability",
    "ChannelGroup",
    "Consumer",
    "KeepMap",
    "StructureEdit",
    "StructureProvider",
    "apply_edit",
    "block_groups",
    "bn_scales",
    "channel_groups",
    "families_offering",
    "filter_l1_norms",
    "has_provider",
    "masked_model",
    "model_capabilities",
    "offers",
    "provider_for",
    "register_provider",
    "require",
    "top_indices",
]
