"""What `prunectl methods` shows: each method's facts, and its settings generated from its settings dataclass."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from prunectl.methods import METHODS, list_methods


def method_rows() -> list[dict[str, Any]]:
    """One row of facts per registered method, by name."""
    return [METHODS.get(name).facts.to_dict() for name in list_methods()]


def method_info(name: str) -> dict[str, Any]:
    """A method's facts, its settings and (for a method that acts during training) its training settings, each
    setting as {name, type, default, help}; an unknown name gets a did-you-mean error."""
    cls = METHODS.get(name)
    training = getattr(cls, "training_settings", None)
    return {**cls.facts.to_dict(), "settings": settings_rows(cls.settings),
            "training_settings": settings_rows(training) if training is not None else []}


def settings_rows(cls: type) -> list[dict[str, Any]]:
    """The fields of a settings dataclass: name, type (as written), default (JSON; None when required), help."""
    hints = typing.get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default, required = f.default, False
        elif f.default_factory is not dataclasses.MISSING:
            default, required = f.default_factory(), False
        else:
            default, required = None, True
        rows.append({"name": f.name, "type": type_text(hints[f.name]), "default": _plain(default),
                     "required": required, "help": str(f.metadata.get("help", ""))})
    return rows


def type_text(tp: Any) -> str:
    """A field's annotation as people write it: 'float | None', 'tuple[int, ...]', 'Mapping[str, float]'."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_text(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "None"
    if origin is not None:
        args = ", ".join("..." if a is Ellipsis else type_text(a) for a in typing.get_args(tp))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _plain(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value
