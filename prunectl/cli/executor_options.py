"""The `compare RECIPE` options that choose how a recipe's runs are executed, and the executor they build."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from prunectl.cli.options import parse_assignments
from prunectl.engine.executors import EXECUTORS, LocalExecutor
from prunectl.errors import UnknownNameError

ExecutorOpt = Annotated[str, typer.Option("--executor", help="serial (this process, default), local (N worker "
                                                             "processes) or slurm (job arrays via submitit).")]
JobsOpt = Annotated[int, typer.Option("--jobs", "-j", help="local: worker processes at once (one GPU each "
                                                           "where GPUs are present).")]
PartitionOpt = Annotated[str | None, typer.Option("--partition", help="slurm: the partition to submit to.")]
GpusPerJobOpt = Annotated[int, typer.Option("--gpus-per-job", help="slurm: GPUs per job (0: none).")]
CpusPerJobOpt = Annotated[int, typer.Option("--cpus-per-job", help="slurm: CPUs per job (and its threads).")]
TimeLimitOpt = Annotated[int, typer.Option("--time-limit", help="slurm: minutes per job; a job that times out "
                                                                "is requeued and resumes from its checkpoint.")]
ArrayParallelismOpt = Annotated[int | None, typer.Option("--array-parallelism", help="slurm: jobs of one "
                                                                                     "array running at once.")]
SbatchOpt = Annotated[list[str] | None, typer.Option("--sbatch", metavar="KEY=VALUE", help="slurm: an extra "
                                                     "sbatch flag, e.g. account=lab or qos=high (repeatable).")]


def make_executor(name: str, *, data_dir: Path | None, device: str, note: Callable[[str], None], jobs: int,
                  threads: int | None, partition: str | None, gpus_per_job: int, cpus_per_job: int,
                  time_limit: int, array_parallelism: int | None, sbatch: list[str] | None) -> Any:
    """The executor `--executor NAME` asks for; the serial one gets its progress bars from `run_recipe`."""
    if name == "serial":
        return None
    if name == "local":
        return LocalExecutor(jobs, data_dir=data_dir, device=device, threads=threads, note=note)
    if name == "slurm":
        from prunectl.engine.executors.slurm import SlurmExecutor

        return SlurmExecutor(data_dir=data_dir, device=device, note=note, partition=partition,
                             gpus_per_job=gpus_per_job, cpus_per_job=cpus_per_job, time_limit_min=time_limit,
                             array_parallelism=array_parallelism,
                             sbatch=parse_assignments(sbatch, "--sbatch"))
    raise UnknownNameError("executor", name, EXECUTORS)

