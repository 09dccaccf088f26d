"""All CLI output goes through `Output`: rich tables for people, one JSON document with `--json`, errors on stderr."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from prunectl.errors import PrunectlError

EXIT_INTERNAL = 3
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
    """Human mode prints rich renderables to stdout and progress to stderr; JSON mode prints one document."""

    def __init__(self, as_json: bool = False) -> None:
        self.as_json = as_json
        self.console = Console(highlight=False)
        self.err = Console(stderr=True, highlight=False)

    def emit(self, data: Any, render: Callable[[Console], None]) -> None:
        if self.as_json:
            sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
        else:
            render(self.console)

    def note(self, message: str) -> None:
        """A remark for people (stderr; silent in JSON mode)."""
        if not self.as_json:
            self.err.print(message, markup=False)

    @contextmanager
    def training_progress(self, label: str) -> Iterator[Callable[[Any], None] | None]:
        """A progress bar for one training run; yields the trainer's callback (None in JSON mode)."""
        with self.progress_board() as board:
            yield board(label) if board is not None else None

    @contextmanager
    def progress_board(self) -> Iterator[Callable[[str], Callable[[Any], None]] | None]:
        """Bars for many training runs (a recipe): yields `board(label) -> trainer callback`; None in JSON mode.

        Nothing is drawn before the first event, so an error before training starts prints only itself.
        """
        if self.as_json:
            yield None
            return
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[info]}"), TimeElapsedColumn())
        bar = Progress(*columns, console=self.err, transient=False)
        started: list[bool] = []

        def board(label: str) -> Callable[[Any], None]:
            task: list[Any] = []

            def update(event: Any) -> None:
                if not started:
                    bar.start()
                    started.append(True)
                if not task:
                    task.append(bar.add_task(label, total=None, info=""))
                description = f"{label} epoch {event.epoch}/{event.epochs}"
                if event.metrics is not None:
                    m = event.metrics
                    bar.update(task[0], description=description,
                               info=f"loss {m['train_loss']:.3f}  test {m['test_acc']:.2f}%")
                else:
                    bar.update(task[0], total=event.batches, completed=event.batch, description=description)

            return update

        try:
            yield board
        finally:
            if started:
                bar.stop()
