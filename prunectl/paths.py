"""Every on-disk name prunectl uses, in one place."""

from __future__ import annotations

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


def rewind_weights(epoch: int) -> str:
    """Weights saved after `epoch` epochs, for late rewinding."""
    return f"weights-epoch{epoch}.safetensors"


def executor_root() -> Path:
    """Where executors keep their own files (e.g. submitit's job folders), beside the runs."""
    return home() / "executors"
