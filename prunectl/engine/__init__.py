"""The engine: prunectl's Python API. Every CLI command is a thin wrapper over one function here.

>>> from prunectl import engine
>>> spec = engine.baseline_spec("smallcnn", "mnist5k", epochs=3)       # doctest: +SKIP
>>> run = engine.train(spec)                                            # doctest: +SKIP
>>> run.result()["final_acc"]                                           # doctest: +SKIP
"""

from prunectl.engine.derive import finetune_spec, scratch_spec
from prunectl.engine.hub import pull, push
from prunectl.engine.info import (
           datasets_report,
           info,
           library_models,
           resolve_arch,
           resolve_run,
           resolve_source,
           source_method,
)
from prunectl.engine.protocols import Protocol, protocol_for
from prunectl.engine.prune import PruneSpec, extract_arch, prune, prune_spec
from prunectl.engine.recipe import Recipe, load_recipe, run_recipe
from prunectl.engine.train import baseline_spec, train
from prunectl.runs.store import Run, open_run

__all__ = ["Protocol", "PruneSpec", "Recipe", "Run", "baseline_spec", "datasets_report", "extract_arch",
           "finetune_spec", "info", "library_models", "load_recipe", "open_run", "protocol_for", "prune", "prune_spec", "pull", "push",
           "resolve_arch", "resolve_run", "resolve_source", "run_recipe", "scratch_spec", "source_method", "train"]
