"""Execute one stored run: rebuild its spec from spec.json, find its parent runs by id, claim it, and call the
engine stage (`train` or `prune`), the same code path a serial recipe takes, so the result is the same.

`prunectl run ID` is this function; executors start it in worker processes and Slurm jobs.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

from prunectl import paths
from prunectl.core.hparams import TrainSpec
from prunectl.engine.prune import PruneSpec, prune
from prunectl.engine.train import train
from prunectl.errors import ArtifactError, UnknownNameError
from prunectl.runs.claim import holding, try_claim
from prunectl.runs.store import Run, open_run
from prunectl.training.trainer import Progress

RUN_ID = re.compile(r"^[0-9a-f]{12}$")


def find_run(run_id: str, near: Path | None = None) -> Run:
    """The run directory named `<stage>-<run_id>` beside `near` (a folder of runs), else in the run store."""
    for root in dict.fromkeys([near, paths.runs_root()]):
        if root is None or not root.is_dir():
            continue
        for path in sorted(root.glob(f"*-{run_id}")):
            if (path / paths.SPEC).is_file() and Run(path).id == run_id:
                return Run(path)
    raise ArtifactError(f"no run {run_id} in the run store ({paths.runs_root()})")


def locate(target: str) -> Run:
    """A run id (12 hex digits) in the store, or a run directory."""
    if RUN_ID.match(target) and not Path(target).is_dir():
        return find_run(target)
    return open_run(target)


def execute(run: Run, *, data_dir: str | Path | None = None, device: str | None = None,
            progress: Callable[[Progress], None] | None = None, note: Callable[[str], None] = lambda m: None,
            poll_seconds: float = 1.0) -> Run:
    """Run (or resume) `run` unless it is done. While another process holds its claim, wait for that process
    to finish it (or to die: its stale claim is then taken over, and the run resumes from its checkpoint)."""
    waiting = False
    while not run.is_done():
        record = try_claim(run.path)
        if record is None:
            if not waiting:
                note(f"{run.path.name}: another process is running it; waiting for its result")
                waiting = True
            time.sleep(poll_seconds)
            continue
        with holding(run.path, record):
            if not run.is_done():
                _stage(run, data_dir=data_dir, device=device, progress=progress, note=note)
    return run


def _stage(run: Run, *, data_dir: str | Path | None, device: str | None,
           progress: Callable[[Progress], None] | None, note: Callable[[str], None]) -> None:
    spec = run.spec()
    near = run.path.parent
    if isinstance(spec, PruneSpec):
        prune(find_run(spec.parent, near), spec, out=run.path, data_dir=data_dir, device=device, note=note)
    elif isinstance(spec, TrainSpec):
        parent = find_run(spec.parent, near) if spec.parent is not None else None
        rewind_source = _root_baseline(parent, near) if spec.init == "rewind" else None
        train(spec, out=run.path, parent=parent, rewind_source=rewind_source, data_dir=data_dir, device=device,
              progress=progress)
    else:
        raise UnknownNameError("kind of run to execute", type(spec).__name__, ["PruneSpec", "TrainSpec"])


def _root_baseline(parent: Run | None, near: Path) -> Run | None:
    """The training run at the root of `parent`'s lineage: the baseline a lottery ticket rewinds to."""
    roots = [r for r in (parent.lineage() if parent is not None else []) if r.get("kind") == "TrainSpec"]
    return find_run(str(roots[-1]["id"]), near) if roots else None
