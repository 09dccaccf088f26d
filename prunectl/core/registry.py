"""A name → implementation registry with glob listing and did-you-mean errors (one per kind of thing)."""

from __future__ import annotations

import fnmatch
import importlib
import pkgutil
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

from prunectl.errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to entries. `kind` names the registry in error messages ("model", "dataset", ...).

    >>> models = Registry[int]("model")
    >>> models.add("vgg16", 16)
    >>> models.get("vgg16"), models.names("vgg*")
    (16, ['vgg16'])
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> None:
        if name in self._entries:
            raise ValueError(f"{self.kind} '{name}' registered twice")
        self._entries[name] = entry

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of `add`."""

        def deco(entry: T) -> T:
            self.add(name, entry)
            return entry

        return deco

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self.kind, name, self._entries) from None

    def names(self, pattern: str = "*") -> list[str]:
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)


def import_package_modules(package: str, path: Iterable[str], skip: Iterable[str] = ()) -> list[str]:
    """Import every module of a package of ours (found in its own folder, `path` = the package's `__path__`), so
    that modules which register an entry on import (a method, a model family, a structure provider) need no
    import line anywhere else: adding the file is adding the entry. Only the package's own files are imported;
    nothing read from data chooses them. Returns the module names imported, sorted.
    """
    names = sorted(m.name for m in pkgutil.iter_modules(list(path)) if m.name not in set(skip))
    for name in names:
        importlib.import_module(f"{package}.{name}")
    return names
