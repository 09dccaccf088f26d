"""Model registry front door: `create_model`, `build_model`, `default_arch`, `list_models`."""

from __future__ import annotations

import inspect
from typing import Any

from prunectl.core.registry import import_package_modules
from prunectl.errors import BadValueError
from prunectl.models.base import FAMILIES, MODELS, Arch, ArchModel, register_family, register_model

# Every module of this package is imported, and so registers its families and models: a new family is one file.
import_package_modules(__name__, __path__, skip=("base", "layers"))
from prunectl.models import external  # noqa: E402  (torchvision:/timm: names in default_arch)

__all__ = [
    "Arch",
    "ArchModel",
    "build_model",
    "create_model",
    "default_arch",
    "list_models",
    "register_family",
    "register_model",
]


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a glob, e.g. ``list_models("resnet*")``."""
    return MODELS.names(pattern)


def default_arch(name: str, num_classes: int = 10, input_size: tuple[int, int, int] | None = None,
                 **options: Any) -> Arch:
    """The unpruned architecture record of a registered model (its factory picks the input size if None), or of a
    library model `torchvision:NAME` / `timm:NAME` (options: `stem`, and the builder's keyword arguments)."""
    if external.is_external(name):
        return external.external_arch(name, num_classes, input_size, **options)
    factory = MODELS.get(name)
    accepted = [p for p in inspect.signature(factory).parameters if p not in ("num_classes", "input_size")]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise BadValueError(f"model '{name}' has no option {', '.join(unknown)} "
                            f"(its options: {', '.join(accepted) or 'none'})")
    kwargs: dict[str, Any] = {"num_classes": num_classes, **options}
    if input_size is not None:
        kwargs["input_size"] = tuple(input_size)
    return factory(**kwargs)


def build_model(arch: Arch) -> ArchModel:
    """Build (and initialise, from torch's global RNG) the network an `Arch` describes.

    Its size is checked first on the meta device (`budget.check_size`), so an absurd width is refused before
    anything is allocated.
    """
    from prunectl.models.budget import check_size

    check_size(arch)
    return FAMILIES.get(arch.family)(arch)


def create_model(name: str, num_classes: int = 10, input_size: tuple[int, int, int] | None = None,
                 **options: Any) -> ArchModel:
    """Build a registered model by name: ``create_model("vgg16", num_classes=100)``."""
    return build_model(default_arch(name, num_classes=num_classes, input_size=input_size, **options))
