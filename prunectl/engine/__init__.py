"""The engine: prunectl's Python API. Every CLI command is a thin wrapper over one function here.

>>> from prunectl import engine
>>> spec = engine.baseline_spec("smallcnn", "mnist5k", epochs=3)       # doctest: +SKIP
>>> run = engine.train(spec)                                            # doctest: +SKIP
>>> run.result()["final_acc"]                                           # doctest: +SKIP
"""

from prunectl.core.store import Run, open_run
from prunectl.engine.hub import pull, push
from prunectl.engine.info import info, resolve_arch
from prunectl.engine.protocols import Protocol, protocol_for
from prunectl.engine.train import baseline_spec, train

__all__ = ["Protocol", "Run", "baseline_spec", "info", "open_run", "protocol_for", "pull", "push", "resolve_arch",
           "train"]
