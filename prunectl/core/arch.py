"""The architecture record: a model family plus its explicit per-layer widths, as validated JSON data."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prunectl.core import limits
from prunectl.errors import ArtifactError, BadValueError, PrunectlError

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
        limits.check_arch_numbers(self.num_classes, self.input_size)
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
            if not isinstance(d.get("config"), Mapping) or not isinstance(d.get("family"), str):
                raise ArtifactError("not an architecture record: needs a 'family' name and a 'config' object")
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
        except PrunectlError:
            raise
        except (KeyError, TypeError, ValueError, OverflowError) as err:
            raise ArtifactError(f"not an architecture record: missing or malformed field {err}") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Arch:
        from prunectl.core.io import parse_json

        data = parse_json(text, "architecture JSON")
        if not isinstance(data, dict):
            raise ArtifactError(f"not an architecture record: a JSON {type(data).__name__}, not an object")
        return cls.from_dict(data)

    @classmethod
    def load(cls, path: str | Path) -> Arch:
        from prunectl.core.io import parse_json

        path = Path(path)
        try:
            data = parse_json(path.read_text(), path)
        except OSError as err:
            raise ArtifactError(f"cannot read architecture {path}: {err.strerror}") from None
        if not isinstance(data, dict):
            raise ArtifactError(f"{path} is not an architecture record (a JSON {type(data).__name__})")
        try:
            return cls.from_dict(data)
        except ArtifactError as err:
            raise ArtifactError(f"{path}: {err}") from None

    def same_structure(self, other: Arch) -> bool:
        """True when both records build the same network (ignores `name` and `notes`)."""
        a, b = self.to_dict(), other.to_dict()
        for d in (a, b):
            d.pop("name", None)
            d.pop("notes", None)
        return a == b
