"""Executors: how the runs of a recipe's waves are run. `serial` in this process (the default), `local` in N
worker processes, `slurm` as Slurm job arrays through submitit. Workers run `prunectl run RUN_DIR`."""

from __future__ import annotations

from prunectl.engine.executors.local import LocalExecutor
from prunectl.engine.executors.serial import SerialExecutor

EXECUTORS = ("serial", "local", "slurm")

__all__ = ["EXECUTORS", "LocalExecutor", "SerialExecutor"]
