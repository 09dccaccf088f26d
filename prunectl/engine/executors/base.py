"""What the worker-based executors share: the command a worker runs, and the failure report."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from prunectl import paths
from prunectl.engine.waves import Job
from prunectl.errors import RunsFailedError


def worker_command(job: Job, *, data_dir: str | Path | None, device: str | None,
                   threads: int | None) -> list[str]:
    """`python -m prunectl run RUN_DIR ...`: everything a worker needs is on this line and in the run store."""
    argv = [sys.executable, "-m", "prunectl", "run", str(job.run.path), "--device", device or "auto"]
    if data_dir is not None:
        argv += ["--data-dir", str(Path(data_dir).expanduser().resolve())]
    if threads is not None:
        argv += ["--threads", str(threads)]
    return argv


def cpu_count() -> int:
    """CPUs this process may use (its affinity mask, which Slurm and taskset narrow), not the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def threads_per_worker(workers: int) -> int:
    """Split the CPUs between workers: oversubscribed OpenMP threads made a 2-core recipe 25× slower once."""
    return max(1, cpu_count() // max(1, workers))


@dataclass(frozen=True)
class Failure:
    job: Job
    reason: str

    @property
    def log(self) -> Path:
        return self.job.run.file(paths.RUN_LOG)


def raise_failures(wave: str, failures: Sequence[Failure]) -> None:
    if failures:
        listed = "; ".join(f"{f.job.run.path.name} ({f.job.label}: {f.reason}; log {f.log})" for f in failures)
        raise RunsFailedError(f"{len(failures)} run(s) of the {wave} wave did not finish: {listed}. "
                              "Rerun the same command to resume them")
