"""All CLI output goes through `Output`: rich tables for people, one JSON document with `--json`, errors on stderr."""

from __future__ import annotations

import functools
import importlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from prunectl.errors import PrunectlError

EXIT_INTERNAL = 3
# The same words as prunectl.core.flops.FLOPS_LABEL, which imports torch (tests/test_output.py checks they agree).
FLOPS_LABEL = "FLOPs (multiply-adds)"
F = TypeVar("F", bound=Callable[..., Any])
_state = {"debug": False}


def set_debug(enabled: bool) -> None:
    _state["debug"] = enabled or os.environ.get("PRUNECTL_DEBUG", "") not in ("", "0")


def debug_enabled() -> bool:
    return _state["debug"] or os.environ.get("PRUNECTL_DEBUG", "") not in ("", "0")


def handle_errors(fn: F) -> F:
    """Known mistakes → one line on stderr and their exit code; bugs → one line and exit 3; `--debug` → traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except PrunectlError as err:
            if debug_enabled():
                raise
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(err.exit_code) from None
        except KeyboardInterrupt:
            typer.echo("interrupted; rerun the same command to resume", err=True)
            raise typer.Exit(130) from None
        except Exception as err:  # a bug, not a user mistake
            if debug_enabled():
                raise
            typer.echo(f"internal error: {type(err).__name__}: {err} (rerun with --debug for the traceback)", err=True)
            raise typer.Exit(EXIT_INTERNAL) from None

    return wrapper  # type: ignore[return-value]


class Output:
    """Human mode prints rich renderables to stdout and progress to stderr; JSON mode prints one document.

    Progress on a terminal is a live rich display (bars, spinners); off a terminal (CI, nohup, a file) it is plain
    lines, one per epoch and one per finished stage, that read well in a log.
    """

    def __init__(self, as_json: bool = False) -> None:
        self.as_json = as_json
        self.console = Console(highlight=False)
        self.err = Console(stderr=True, highlight=False)
        self.live = self.err.is_terminal and not as_json

    def emit(self, data: Any, render: Callable[[Console], None]) -> None:
        if self.as_json:
            sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
        else:
            render(self.console)

    def note(self, message: str) -> None:
        """A remark for people (stderr; silent in JSON mode)."""
        if not self.as_json:  # off a terminal one line per remark, unwrapped (logs are grepped)
            self.err.print(message, markup=False, soft_wrap=not self.live)

    @contextmanager
    def busy(self, message: str) -> Iterator[None]:
        """A silent phase (loading data, pruning): a spinner on a terminal; off it, one plain line once the phase
        has finished (a phase that fails prints nothing, so its error stays the only line)."""
        if self.as_json:
            yield
        elif self.live:
            with self.err.status(message, spinner="dots"):
                yield
        else:
            start = time.perf_counter()
            yield
            self.err.print(f"{message.rstrip('…')}: done, {time.perf_counter() - start:.1f} s", markup=False)

    def engine(self) -> ModuleType:
        """`prunectl.engine`, imported on first use (torch takes seconds to import: a spinner says so)."""
        if "prunectl.engine" not in sys.modules:
            with self.busy("starting (importing torch)…") if self.live else _nothing():
                importlib.import_module("prunectl.engine")
        return sys.modules["prunectl.engine"]

    @contextmanager
    def training_progress(self, label: str) -> Iterator[Callable[[Any], None] | None]:
        """A progress bar for one training run; yields the trainer's callback (None in JSON mode)."""
        with self.progress_board() as board:
            yield board(label) if board is not None else None

    @contextmanager
    def progress_board(self) -> Iterator[Callable[[str], Callable[[Any], None]] | None]:
        """Progress for many training runs (a recipe): yields `board(label) -> trainer callback`; None in JSON mode.

        Stages come one after another: asking for the next label closes the last one, and a stage that saw no
        training at all came from the run store ("reused"). An error before training starts prints only itself.
        """
        if self.as_json:
            yield None
            return
        board = _Board(self.err, self.live)
        try:
            yield board
            board.close()
        finally:
            board.stop()


@contextmanager
def _nothing() -> Iterator[None]:
    yield


class _Stage:
    """One training run on the board: its label, when it started, and the last epoch it reported."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.start = time.monotonic()
        self.events = 0
        self.last: Any = None
        self.task: Any = None


class _Board:
    """The callbacks of `Output.progress_board`. On a terminal one bar per stage spans all its epochs (a bar that
    reached its total once would stop its elapsed clock: rich freezes a finished task's time)."""

    def __init__(self, err: Console, live: bool) -> None:
        self.err, self.live = err, live
        self.stage: _Stage | None = None
        self.bar: Progress | None = None
        if live:
            self.bar = Progress(SpinnerColumn(finished_text="[green]✓[/]"), TextColumn("{task.description}"),
                                BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                                TimeElapsedColumn(), console=err, transient=False)

    def __call__(self, label: str) -> Callable[[Any], None]:
        self.close()
        stage = self.stage = _Stage(label)
        if self.bar is not None:
            if not self.bar.live.is_started:
                self.bar.start()
            stage.task = self.bar.add_task(f"{label}: loading data", total=None, info="")
        return lambda event: self._update(stage, event)

    def _update(self, stage: _Stage, event: Any) -> None:
        stage.events += 1
        if event.metrics is not None:
            stage.last = event
            if self.bar is None:
                self.err.print(epoch_line(stage.label, event), markup=False, soft_wrap=True)
        if self.bar is None:
            self._close_if_last(stage, event)
            return
        done_batches = (event.epoch - 1) * event.batches + event.batch if event.metrics is None else None
        fields: dict[str, Any] = {"description": f"{stage.label} epoch {event.epoch}/{event.epochs}"}
        if event.metrics is not None:
            m = event.metrics
            fields["info"] = f"loss {m['train_loss']:.3f}  test {m['test_acc']:.2f}%"
        elif event.batches:
            fields.update(total=event.epochs * event.batches, completed=done_batches)
        self.bar.update(stage.task, **fields)
        self._close_if_last(stage, event)

    def _close_if_last(self, stage: _Stage, event: Any) -> None:
        """The last epoch's metrics end the stage: its line comes now, before what the recipe does next (a prune)."""
        if event.metrics is not None and event.epoch == event.epochs and self.stage is stage:
            self.close()

    def close(self) -> None:
        """The current stage is over: say how it ended (trained, or reused from the run store)."""
        stage, self.stage = self.stage, None
        if stage is None:
            return
        reused = stage.events == 0
        line = stage_line(stage.label, stage.last, reused, time.monotonic() - stage.start)
        if self.bar is not None:
            task = self.bar.tasks[[t.id for t in self.bar.tasks].index(stage.task)]
            total = task.total or 1
            self.bar.update(stage.task, description=line if reused else task.description, total=total,
                            completed=total)
        else:
            self.err.print(line, markup=False, soft_wrap=True)

    def stop(self) -> None:
        if self.bar is None or not self.bar.live.is_started:
            return
        if self.stage is not None and self.stage.events == 0:  # failed before training: leave only the error
            self.bar.remove_task(self.stage.task)
        self.bar.stop()


def epoch_line(label: str, event: Any) -> str:
    """`seed 0 baseline  epoch 3/8  loss 0.412  train 88.10%  test 90.25%  12.3 s`: one epoch, in a log."""
    m = event.metrics
    parts = [f"{label}  epoch {event.epoch}/{event.epochs}", f"loss {m['train_loss']:.4f}"]
    if "train_acc" in m:
        parts.append(f"train {m['train_acc']:.2f}%")
    parts.append(f"test {m['test_acc']:.2f}%")
    if "wall_seconds" in m:
        parts.append(f"{m['wall_seconds']:.1f} s")
    return "  ".join(parts)


def stage_line(label: str, last: Any, reused: bool, seconds: float) -> str:
    """`seed 0 baseline: done, 8 epochs, test 97.10%, 35.2 s` or `seed 0 baseline: reused (from the run store)`."""
    if reused:
        return f"{label}: reused (from the run store)"
    if last is None:
        return f"{label}: done, {seconds:.1f} s"
    return f"{label}: done, {last.epoch} epochs, test {last.metrics['test_acc']:.2f}%, {seconds:.1f} s"
