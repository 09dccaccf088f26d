"""Every on-disk name prunectl uses, in one place."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

SPEC = "spec.json"
ARCH = "arch.json"
MODEL = "model.safetensors"
INIT = "init.safetensors"
MASK = "mask.safetensors"
METRICS = "metrics.jsonl"
RESULT = "result.json"
CHECKPOINT = "checkpoint.safetensors"
CONFIG = "config.json"
CARD = "README.md"
LINEAGE = "lineage.json"  # the spec records of every ancestor run, parent first
SOURCE = "source.json"  # where a pulled run came from: repo, revision, resolved commit
ZOO_ENV = "PRUNECTL_ZOO_DIR"  # moves the whole zoo: entries, weights and recipes (tests, maintainers)
ZOO_ENTRIES = "entries"
ZOO_WEIGHTS = "weights"
ZOO_RECIPES = "recipes"
LOCK = "run.lock"  # held while a process executes the run (prunectl/runs/claim.py)
ATTEMPTS = "attempts.jsonl"  # one line per time a process started (or resumed) executing the run
RUN_LOG = "run.log"  # the output of `prunectl run` when an executor ran it in a worker


def home() -> Path:
    """Root of the run store: $PRUNECTL_HOME, else $XDG_DATA_HOME/prunectl, else ~/.local/share/prunectl."""
    if env := os.environ.get("PRUNECTL_HOME"):
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "prunectl"


def runs_root() -> Path:
    return home() / "runs"


def zoo_root() -> Path:
    """The zoo folder (entries/, weights/, recipes/): $PRUNECTL_ZOO_DIR, else the shipped one.

    The shipped zoo is the repository's top-level `zoo/`, which the wheel installs as the package `prunectl.zoo`.
    It is found beside the imported `prunectl` package, not through the import system first: an installed wheel
    has it at `prunectl/zoo/`, a source checkout (or an editable install of one) at `<repo>/zoo/`. Asking
    importlib first can answer with another checkout's zoo: an editable install made from one tree keeps a finder
    for `prunectl.zoo` that a second tree on PYTHONPATH inherits. importlib is the last resort, for layouts
    where neither place exists.
    """
    if env := os.environ.get(ZOO_ENV):
        return Path(env).expanduser()
    package = Path(__file__).resolve().parent
    for candidate in (package / "zoo", package.parent / "zoo"):
        if (candidate / ZOO_ENTRIES).is_dir():
            return candidate
    spec = importlib.util.find_spec("prunectl.zoo")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return package.parent / "zoo"


def rewind_weights(epoch: int) -> str:
    """Weights saved after `epoch` epochs, for late rewinding."""
    return f"weights-epoch{epoch}.safetensors"


def executor_root() -> Path:
    """Where executors keep their own files (e.g. submitit's job folders), beside the runs."""
    return home() / "executors"
