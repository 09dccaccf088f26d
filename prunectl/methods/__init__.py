"""Pruning methods: `get_method(name)`, `list_methods()`; each method's settings are its own dataclass."""

# Importing the method modules registers them.
from prunectl.methods import l1norm, slimming, weight  # noqa: E402,F401,I001
from prunectl.methods import thinet  # noqa: E402,F401,I001
from prunectl.methods import regression  # noqa: E402,F401,I001
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

__all__ = ["METHODS", "Method", "MethodFacts", "PruneContext", "PruneOutcome", "get_method", "list_methods",
           "method_facts", "register_method"]
