"""A local worker process: `prunectl worker` reads run directories from stdin, one per line, executes each
(engine/execute.py, as `prunectl run` does) with its output appended to that run's run.log, and answers one JSON
status line per run on its own stdout. Only paths cross the pipe.

A worker serves many runs so that the cost of starting Python and importing torch (seconds on 2 busy cores) is
paid once per worker, not once per run; runs stay as independent as in a serial recipe, which also trains them
one after another in one process.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from prunectl import paths
from prunectl.engine.execute import execute
from prunectl.runs.store import open_run


@contextmanager
def output_to(path: Path) -> Iterator[None]:
    """Send this process's stdout and stderr (file descriptors 1 and 2, so C code too) to `path`, appending."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for f in (fd, *saved):
            os.close(f)


def _note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _epoch_line(event: Any) -> None:
    if event.metrics is not None:
        m = event.metrics
        _note(f"epoch {event.epoch}/{event.epochs}  loss {m['train_loss']:.4f}  test {m['test_acc']:.2f}%")


def serve(requests: Iterable[str], status: IO[str], *, data_dir: str | Path | None = None,
          device: str | None = None) -> None:
    """Execute each requested run directory; one status line {"run", "ok", "error"} per request."""
    for line in requests:
        target = line.strip()
        if not target:
            continue
        ok, error = True, None
        run_dir = Path(target)
        with output_to(run_dir / paths.RUN_LOG):
            try:
                run = open_run(run_dir)
                _note(f"run {run.path} ({run.stage}) in worker {os.getpid()}")
                execute(run, data_dir=data_dir, device=device, progress=_epoch_line, note=_note)
                _note(f"{run.stage} {run.id}: done")
            except Exception as err:  # reported to the coordinator; the worker goes on with the next run
                traceback.print_exc()
                ok, error = False, f"{type(err).__name__}: {err}"
        status.write(json.dumps({"run": target, "ok": ok, "error": error}) + "\n")
        status.flush()


def serve_stdio(*, data_dir: str | Path | None = None, device: str | None = None) -> None:
    """`serve` on stdin, with the status lines on a private copy of stdout (anything else printed goes to the
    run's log, never into the status stream)."""
    status = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    serve(sys.stdin, status, data_dir=data_dir, device=device)
