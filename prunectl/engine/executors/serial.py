"""The serial executor: every run in this process, one after the other (what `compare RECIPE` always did)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

from prunectl.core.hparams import TrainSpec
from prunectl.engine.execute import execute
from prunectl.engine.waves import Job, prune_summary
from prunectl.training.trainer import Progress


class SerialExecutor:
    """Runs a wave's jobs in order in this process; an error propagates as it is (nothing else is running)."""

    one_seed_at_a_time = True

    def __init__(self, *, data_dir: str | Path | None = None, device: str | None = None,
                 progress: Callable[[str], Callable[[Progress], None] | None] | None = None,
                 note: Callable[[str], None] = lambda message: None) -> None:
        self.data_dir, self.device, self.progress, self.note = data_dir, device, progress, note

    def run_wave(self, name: str, jobs: Sequence[Job]) -> None:
        for job in jobs:
            bar = None
            trains, done = isinstance(job.run.spec(), TrainSpec), job.run.is_done()
            if self.progress is not None and trains and not done:
                bar = self.progress(job.label)
            started = time.perf_counter()
            execute(job.run, data_dir=self.data_dir, device=self.device, progress=bar, note=self.note)
            if not trains and not done:  # a training stage has its own lines; pruning gets one too
                self.note(f"{job.label}: {prune_summary(job.run.result())}, {time.perf_counter() - started:.1f} s")

    def close(self) -> None:
        """Nothing to release: everything ran in this process."""
