"""Pruning methods: `get_method(name)`, `list_methods()`; each method's settings are its own dataclass."""

from prunectl.core.registry import import_package_modules
from prunectl.methods.base import (
    METHODS,
    Method,
    MethodFacts,
    PruneContext,
    PruneOutcome,
    get_method,
    list_methods,
    method_facts,
    register_method,
)

# Every module of this package is imported, and so registers its method: a new method is one new file here.
import_package_modules(__name__, __path__, skip=("base",))

__all__ = ["METHODS", "Method", "MethodFacts", "PruneContext", "PruneOutcome", "get_method", "list_methods",
           "method_facts", "register_method"]
