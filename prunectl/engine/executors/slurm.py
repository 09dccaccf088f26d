"""The Slurm executor: each wave's missing runs as one Slurm job array through submitit (`prunectl[slurm]`).

Every job runs `prunectl run RUN_DIR` against the shared run store; submitit's job folders (pickles of argv
only, and Slurm's stdout/stderr) live under the store in executors/slurm/.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from prunectl import paths
from prunectl.engine.executors.base import Failure, raise_failures, worker_command
from prunectl.engine.waves import Job
from prunectl.errors import BadValueError, ExecutorError

EXTRA = "pip install 'prunectl[slurm]'"


def require_submitit() -> Any:
    try:
        import submitit
    except ImportError:
        raise ExecutorError(f"--executor slurm needs submitit, which is not installed: {EXTRA}") from None
    return submitit


def check_slurm() -> None:
    """A one-line error naming what is missing when no Slurm controller answers from here."""
    if shutil.which("sbatch") is None:
        raise ExecutorError("--executor slurm: Slurm is not reachable (no sbatch on PATH); run on a machine "
                            "of the cluster, e.g. a login node")
    try:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise ExecutorError(f"--executor slurm: Slurm is not reachable (scontrol ping: {err})") from None
    if ping.returncode != 0 or "UP" not in ping.stdout:
        said = " ".join((ping.stdout + ping.stderr).split()) or f"exit {ping.returncode}"
        raise ExecutorError(f"--executor slurm: Slurm is not reachable (scontrol ping: {said})")


class SlurmExecutor:
    """One job array per wave, one job per missing run (1 task, `cpus_per_job` CPUs, `gpus_per_job` GPUs)."""

    one_seed_at_a_time = False

    def __init__(self, *, data_dir: str | Path | None = None, device: str | None = None,
                 note: Callable[[str], None] = lambda message: None, partition: str | None = None,
                 gpus_per_job: int = 0, cpus_per_job: int = 1, time_limit_min: int = 24 * 60,
                 array_parallelism: int | None = None, sbatch: Mapping[str, Any] | None = None,
                 max_requeues: int = 3, folder: Path | None = None, poll_seconds: float = 2.0) -> None:
        for name, value, least in (("--gpus-per-job", gpus_per_job, 0), ("--cpus-per-job", cpus_per_job, 1),
                                   ("--time-limit", time_limit_min, 1), ("--array-parallelism",
                                                                        array_parallelism or 1, 1)):
            if value < least:
                raise BadValueError(f"{name} must be at least {least}, got {value}")
        self.submitit = require_submitit()
        check_slurm()
        self.data_dir, self.device, self.note = data_dir, device, note
        self.parameters: dict[str, Any] = {
            "cpus_per_task": cpus_per_job, "time": time_limit_min, "nodes": 1, "ntasks_per_node": 1,
            "additional_parameters": dict(sbatch or {}),
        }
        if partition:
            self.parameters["partition"] = partition
        if gpus_per_job:
            self.parameters["gpus_per_node"] = gpus_per_job
        if array_parallelism:
            self.parameters["array_parallelism"] = array_parallelism
        self.threads = cpus_per_job
        self.max_requeues = max_requeues
        self.folder = folder or paths.executor_root() / "slurm"
        self.poll_seconds = poll_seconds
        self.submitted = 0  # Slurm jobs submitted so far (a run served from the store submits none)

    def close(self) -> None:
        """Nothing to release: each wave's jobs ended with the wave."""

    @staticmethod
    def _state(future: Any) -> str:
        """The job's final state from Slurm (CANCELLED, TIMEOUT, FAILED, ...), asked afresh."""
        try:
            return str(future.get_info(mode="force").get("State") or future.state)
        except Exception:  # the query itself failing must not hide which run failed
            return str(future.state)

    def run_wave(self, name: str, jobs: Sequence[Job]) -> None:
        from prunectl.engine.executors.slurm_job import RunCommand

        todo = [job for job in jobs if not job.run.is_done()]
        if not todo:
            self.note(f"{name}: all {len(jobs)} run(s) from the store")
            return
        executor = self.submitit.SlurmExecutor(folder=self.folder / "%j", max_num_timeout=self.max_requeues)
        executor.update_parameters(job_name=f"prunectl-{name}", **self.parameters)
        commands = [RunCommand(worker_command(job, data_dir=self.data_dir, device=self.device,
                                              threads=self.threads), str(job.run.file(paths.RUN_LOG)))
                    for job in todo]
        with executor.batch():
            futures = [executor.submit(command) for command in commands]
        self.submitted += len(futures)
        array = futures[0].job_id.split("_")[0]
        self.note(f"{name}: {len(todo)} to run, {len(jobs) - len(todo)} from the store; Slurm job array {array} "
                  f"(logs: {self.folder})")
        pending, failures, finished = dict(zip(futures, todo, strict=True)), [], 0
        while pending:
            time.sleep(self.poll_seconds)
            for future, job in [(f, j) for f, j in pending.items() if f.done()]:
                del pending[future]
                finished += 1
                error = future.exception()
                if error is None and job.run.is_done():
                    self.note(f"  [{finished}/{len(todo)}] {job.label}: done (job {future.job_id})")
                else:
                    reason = f"Slurm job {future.job_id} {self._state(future)}"
                    failures.append(Failure(job, reason))
                    self.note(f"  [{finished}/{len(todo)}] {job.label}: FAILED ({reason}); log "
                              f"{job.run.file(paths.RUN_LOG)}")
        raise_failures(name, failures)
