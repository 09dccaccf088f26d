"""Frozen hyperparameter dataclasses: canonical JSON, rebuild from JSON, and the content hash that names runs."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from prunectl.errors import ArtifactError, BadValueError

SCHEMA_VERSION = 1
S = TypeVar("S", bound="Spec")


def _encode(value: Any, omit_defaults: bool) -> Any:
    if isinstance(value, Spec):
        return value.to_dict(omit_defaults=omit_defaults)
    if hasattr(value, "to_dict"):  # Arch and other records
        return value.to_dict()
    if isinstance(value, tuple | list):
        return [_encode(v, omit_defaults) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _encode(v, omit_defaults) for k, v in value.items()}
    return value


def _decode(tp: Any, value: Any) -> Any:
    """Rebuild a field value of annotated type `tp` from its JSON form."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        return _decode(options[0], value)
    if origin is tuple:
        args = typing.get_args(tp)
        inner = args[0] if args else Any
        return tuple(_decode(inner, v) for v in value)
    if isinstance(tp, type) and issubclass(tp, Spec):
        return tp.from_dict(value)
    if isinstance(tp, type) and hasattr(tp, "from_dict"):
        return tp.from_dict(value)
    if tp is float and isinstance(value, int):
        return float(value)
    return value


class Spec:
    """Mixin for frozen dataclasses that describe one concern (optimiser, schedule, a method's settings...).

    `to_dict(omit_defaults=True)` is the canonical form that is hashed: a field left at its default is omitted,
    so adding a new defaulted field later does not change the ids of old runs.

    >>> @dataclasses.dataclass(frozen=True)
    ... class Demo(Spec):
    ...     lr: float = 0.1
    ...     epochs: int = 10
    >>> Demo(epochs=3).to_dict(omit_defaults=True)
    {'epochs': 3}
    >>> Demo.from_dict({'epochs': 3}) == Demo(epochs=3)
    True
    """

    def to_dict(self, omit_defaults: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if omit_defaults and _is_default(f, value):
                continue
            out[f.name] = _encode(value, omit_defaults)
        return out

    @classmethod
    def from_dict(cls: type[S], data: Mapping[str, Any]) -> S:
        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = set(data) - names
        if unknown:
            raise ArtifactError(f"{cls.__name__} has no field(s) {', '.join(sorted(unknown))}")
        try:
            return cls(**{k: _decode(hints[k], v) for k, v in data.items()})
        except TypeError as err:
            raise ArtifactError(f"cannot rebuild {cls.__name__}: {err}") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls: type[S], text: str) -> S:
        return cls.from_dict(json.loads(text))

    def canonical_json(self) -> str:
        body = {"schema": SCHEMA_VERSION, "kind": type(self).__name__, "spec": self.to_dict(omit_defaults=True)}
        return json.dumps(body, sort_keys=True, separators=(",", ":"))

    def spec_hash(self) -> str:
        """12 hex digits of sha256 over the canonical JSON; the identity of a run."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()[:12]

    def replace(self: S, **changes: Any) -> S:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


def settings_from(cls: type[S], values: Mapping[str, Any], owner: str) -> S:
    """Build the settings dataclass `cls` from user-given `values` (a `--set` list, a recipe table), with one-line
    errors: an unknown key names every valid key, and a value of the wrong type names the field.

    `owner` says whose settings they are in messages ("method 'l1-norm'").
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise BadValueError(f"{owner} has no setting {', '.join(repr(k) for k in unknown)} "
                            f"(its settings: {', '.join(fields) or 'none'})")
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        if not _fits(hints[key], value):
            raise BadValueError(f"{owner}: setting '{key}' must be {_type_name(hints[key])}, got {value!r}")
    try:
        return cls(**{k: _decode(hints[k], v) for k, v in values.items()})
    except TypeError as err:
        raise BadValueError(f"{owner}: {err}") from None


def _fits(tp: Any, value: Any) -> bool:
    """Whether a JSON value can stand for a field annotated `tp` (numbers: bools are not numbers)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_fits(a, value) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if origin in (tuple, list):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        return isinstance(value, list | tuple) and all(_fits(args[0], v) for v in value) if args else True
    if origin in (dict, Mapping) or tp is dict:
        return isinstance(value, Mapping)
    return True


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if origin in (tuple, list):
        return "a list"
    if origin in (dict, Mapping):
        return "a table {key: value}"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(tp, str(tp))


def _is_default(f: dataclasses.Field[Any], value: Any) -> bool:
    if f.default is not dataclasses.MISSING:
        return bool(value == f.default)
    if f.default_factory is not dataclasses.MISSING:
        return bool(value == f.default_factory())
    return False


def check(condition: bool, message: str) -> None:
    """Validate a spec field in `__post_init__`; raises the one-line BadValueError users see."""
    if not condition:
        raise BadValueError(message)


def helptext(text: str, **kw: Any) -> Any:
    """`field(...)` with its help string in metadata, read by the CLI so help and field never drift."""
    return dataclasses.field(metadata={"help": text}, **kw)


SPEC_KINDS: dict[str, type[Spec]] = {}


def register_spec(cls: type[S]) -> type[S]:
    """Make a spec class rebuildable from a run's spec.json (`kind` is the class name)."""
    SPEC_KINDS[cls.__name__] = cls
    return cls


def spec_from_record(record: Mapping[str, Any]) -> Spec:
    """Rebuild the spec stored in a spec.json record ({"kind": ..., "spec": {...}})."""
    kind = record.get("kind")
    if kind not in SPEC_KINDS:
        raise ArtifactError(f"unknown spec kind '{kind}' (known: {', '.join(sorted(SPEC_KINDS))})")
    return SPEC_KINDS[kind].from_dict(record["spec"])
