"""User-facing errors: one type per mistake, each mapped by the CLI to a one-line message and exit code 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

EXIT_OK = 0
EXIT_GATE_FAILED = 1
EXIT_USER_ERROR = 2
EXIT_RUNS_FAILED = 4


class PrunectlError(Exception):
    """Base of every error caused by input the user can fix; `str(err)` is the one-line message."""

    exit_code = EXIT_USER_ERROR


class UnknownNameError(PrunectlError, KeyError):
    """A registry lookup (model, dataset, method, zoo entry) for a name that does not exist."""

    def __init__(self, kind: str, name: str, valid: Iterable[str]) -> None:
        valid = sorted(valid)
        close = difflib.get_close_matches(name, valid, n=3, cutoff=0.5)
        hint = "; did you mean " + " or ".join(f"'{c}'" for c in close) + "?" if close else ""
        shown = ", ".join(valid[:12]) + (", ..." if len(valid) > 12 else "")
        super().__init__(f"unknown {kind} '{name}'{hint} (valid: {shown})")
        self.name, self.valid, self.closest = name, valid, close[0] if close else None

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0])


class BadValueError(PrunectlError, ValueError):
    """A number or option outside its valid range, or options that contradict each other."""


class DataUnavailableError(PrunectlError):
    """A dataset that is neither on disk nor downloadable right now."""


class OutputError(PrunectlError):
    """An output location that cannot be written, or holds something we must not overwrite."""


class ArtifactError(PrunectlError):
    """A run directory, architecture, mask or weights file that is missing, corrupt or inconsistent."""


class HubError(PrunectlError):
    """A Hugging Face Hub repository or revision that cannot be used."""


class ExecutorError(PrunectlError):
    """An executor that cannot run here: its optional package is missing, or its cluster is not reachable."""


class RunsFailedError(PrunectlError):
    """Runs of a recipe that an executor started and that did not finish (the message names them and their logs)."""

    exit_code = EXIT_RUNS_FAILED
