"""Architectures as data: the `Arch` record, the `ArchModel` base every family extends, and the registries."""

from __future__ import annotations

import abc
import copy
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from torch import nn

from prunectl.core.registry import Registry
from prunectl.errors import ArtifactError, BadValueError

ARCH_SCHEMA = 1


@dataclass(frozen=True)
class Arch:
    """A model family plus its explicit per-layer widths: everything needed to rebuild the network.

    `config` is family-specific and JSON-serialisable (lists, ints, strings, bools); for example a CIFAR VGG is
    ``Arch("cifar_vgg", {"cfg": [64, 64, "M", ...], "head": "linear"}, 10, (3, 32, 32), name="vgg16")``.
    `name` is informational (where the record came from) and never changes what is built.
    """

    family: str
    config: Mapping[str, Any]
    num_classes: int
    input_size: tuple[int, int, int]
    name: str | None = None
    notes: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.num_classes < 1:
            raise BadValueError(f"num_classes must be >= 1, got {self.num_classes}")
        if len(self.input_size) != 3 or min(self.input_size) < 1:
            raise BadValueError(f"input_size must be (channels, height, width), got {self.input_size}")
        object.__setattr__(self, "input_size", tuple(int(v) for v in self.input_size))
        # Normalise through JSON so tuples/lists compare equal and the record is certainly serialisable.
        object.__setattr__(self, "config", json.loads(json.dumps(self.config)))
        object.__setattr__(self, "notes", json.loads(json.dumps(self.notes)))

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "schema": ARCH_SCHEMA,
            "family": self.family,
            "num_classes": self.num_classes,
            "input_size": list(self.input_size),
            "config": copy.deepcopy(dict(self.config)),
        }
        if self.name is not None:
            d["name"] = self.name
        if self.notes:
            d["notes"] = copy.deepcopy(dict(self.notes))
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Arch:
        try:
            if d.get("schema", ARCH_SCHEMA) != ARCH_SCHEMA:
                raise ArtifactError(f"architecture schema {d['schema']} is not supported (expected {ARCH_SCHEMA})")
            return cls(
                family=d["family"],
                config=d["config"],
                num_classes=int(d["num_classes"]),
                input_size=tuple(d["input_size"]),  # type: ignore[arg-type]
                name=d.get("name"),
                notes=d.get("notes", {}),
            )
        except (KeyError, TypeError) as err:
            raise ArtifactError(f"not an architecture record: missing or malformed field {err}") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Arch:
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as err:
            raise ArtifactError(f"architecture JSON does not parse: {err}") from None

    @classmethod
    def load(cls, path: str | Path) -> Arch:
        path = Path(path)
        try:
            return cls.from_json(path.read_text())
        except OSError as err:
            raise ArtifactError(f"cannot read architecture {path}: {err.strerror}") from None

    def same_structure(self, other: Arch) -> bool:
        """True when both records build the same network (ignores `name` and `notes`)."""
        a, b = self.to_dict(), other.to_dict()
        for d in (a, b):
            d.pop("name", None)
            d.pop("notes", None)
        return a == b


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
