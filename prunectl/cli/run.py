"""Command `run`: execute one stored run (the unit of work executors hand to workers and Slurm jobs)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from prunectl.cli.options import DataDirOpt, DeviceOpt, JsonOpt
from prunectl.cli.output import Output, handle_errors
from prunectl.engine.execute import execute, locate
from prunectl.errors import BadValueError


def register(app: typer.Typer) -> None:
    app.command("run")(run)
    app.command("worker", hidden=True)(worker)


@handle_errors
def run(
    target: Annotated[str, typer.Argument(help="A run id (12 hex digits) in the run store, or a run directory.")],
    threads: Annotated[int | None, typer.Option(help="CPU threads for this run (default: torch's choice).")] = None,
    data_dir: DataDirOpt = None,
    device: DeviceOpt = "auto",
    as_json: JsonOpt = False,
) -> None:
    """Run (or resume) one prepared run from its spec.json; its parents must be finished runs in the same store.

    It waits while another process holds the run, so two workers never train the same id.
    """
    output = Output(as_json)
    _set_threads(threads)
    found = locate(target)
    output.note(f"run {found.path} ({found.stage})")
    execute(found, data_dir=data_dir, device=device, progress=_epoch_lines(output), note=output.note)
    result = found.result()
    output.emit({**result, "run": str(found.path)},
                lambda c: c.print(f"{found.stage} {found.id}: final accuracy {result['final_acc']:.2f}% "
                                  f"({found.path})", markup=False))


@handle_errors
def worker(
    threads: Annotated[int | None, typer.Option(help="CPU threads for the runs (default: torch's choice).")] = None,
    data_dir: DataDirOpt = None,
    device: DeviceOpt = "auto",
) -> None:
    """Serve `compare --executor local`: run directories on stdin, one JSON status line per run on stdout."""
    from prunectl.engine.executors.worker import serve_stdio

    _set_threads(threads)
    serve_stdio(data_dir=data_dir, device=device)


def _set_threads(threads: int | None) -> None:
    if threads is not None:
        if threads < 1:
            raise BadValueError(f"--threads must be at least 1, got {threads}")
        import torch

        torch.set_num_threads(threads)


def _epoch_lines(output: Output) -> Any:
    """One line per finished epoch (a log file reads better than a progress bar)."""
    def report(event: Any) -> None:
        if event.metrics is not None:
            m = event.metrics
            output.note(f"epoch {event.epoch}/{event.epochs}  loss {m['train_loss']:.4f}  test {m['test_acc']:.2f}%")
    return report
