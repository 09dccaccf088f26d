"""The run store: one directory per stage run, named by the hash of its spec, holding safetensors + JSON."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from prunectl import __version__, paths
from prunectl.core import validate
from prunectl.core.io import load_tensors, read_json, write_json
from prunectl.core.spec import Spec, spec_from_record
from prunectl.errors import ArtifactError, OutputError
from prunectl.models import Arch, ArchModel, build_model
from prunectl.models.budget import meta_model


@dataclass(frozen=True)
class Run:
    """A run directory on disk. Cheap to create; every accessor reads the files it needs.

    >>> run = open_run("runs/train-3fa9c1d2e4b5")       # doctest: +SKIP
    >>> run.result()["final_acc"], run.arch().family     # doctest: +SKIP
    """

    path: Path

    @property
    def record(self) -> dict[str, Any]:
        return validate.check_record(read_json(self.path / paths.SPEC), self.path / paths.SPEC)

    @property
    def id(self) -> str:
        return str(self.record["id"])

    @property
    def stage(self) -> str:
        return str(self.record.get("stage", "?"))

    def spec(self) -> Spec:
        return spec_from_record(self.record)

    def file(self, name: str) -> Path:
        return self.path / name

    def has(self, name: str) -> bool:
        return (self.path / name).is_file()

    def is_done(self) -> bool:
        return self.has(paths.RESULT)

    def result(self) -> dict[str, Any]:
        if not self.is_done():
            raise ArtifactError(f"run {self.path} has not finished (no {paths.RESULT})")
        return dict(validate.check_result(read_json(self.path / paths.RESULT), self.path / paths.RESULT))

    def arch(self) -> Arch:
        return Arch.load(self.path / paths.ARCH)

    def metrics(self) -> list[dict[str, Any]]:
        if not self.has(paths.METRICS):
            return []
        path = self.path / paths.METRICS
        try:
            lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError, ValueError) as err:
            raise ArtifactError(f"{path}: not valid JSON lines ({err}); {validate.RESTORE}") from None
        return validate.check_metrics(lines, path)

    def weights(self, name: str = paths.MODEL) -> dict[str, torch.Tensor]:
        return load_tensors(self.path / name)

    def lineage(self) -> list[dict[str, Any]]:
        """Spec records of this run's ancestors, parent first (empty for a baseline)."""
        if not self.has(paths.LINEAGE):
            return []
        return validate.check_lineage(read_json(self.path / paths.LINEAGE), self.path / paths.LINEAGE)

    def mask(self) -> dict[str, torch.Tensor] | None:
        """The run's 0/1 masks, checked to fit its architecture (names and shapes), or None."""
        if not self.has(paths.MASK):
            return None
        mask = load_tensors(self.path / paths.MASK)
        validate.check_mask(mask, meta_model(self.arch()), self.path / paths.MASK)
        return mask

    def model(self, weights: str = paths.MODEL) -> ArchModel:
        """Rebuild the network from arch.json and load `weights` (strictly: shapes must match)."""
        model = build_model(self.arch())
        load_weights(model, self.weights(weights), source=self.path / weights)
        return model


def load_weights(model: torch.nn.Module, state: dict[str, torch.Tensor], source: Path | str) -> None:
    """Load a state dict strictly, turning any mismatch into a one-line ArtifactError."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    bad = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or extra or bad:
        first = (missing or extra or bad)[0]
        raise ArtifactError(
            f"weights in {source} do not fit the architecture ({len(missing)} missing, {len(extra)} unexpected, "
            f"{len(bad)} wrong shape; e.g. '{first}')"
        )
    model.load_state_dict(state)


def open_run(path: str | Path) -> Run:
    """A finished or unfinished run directory; a clear error if `path` is not one."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise ArtifactError(f"no run directory at {path}")
    if not (path / paths.SPEC).is_file():
        raise ArtifactError(f"{path} is not a prunectl run (no {paths.SPEC})")
    return Run(path)


def write_lineage(run: Run, parent: Run) -> None:
    """Record `parent` and its ancestors in `run` so the provenance survives on disk."""
    write_json(run.file(paths.LINEAGE), [parent.record, *parent.lineage()])


def record_protocol(run: Run, protocol: Mapping[str, str]) -> None:
    """Keep the training protocol the run's data follows, and why, in its spec.json (`"protocol"`, beside the
    spec and not part of the hashed spec, so it never changes the run's id)."""
    record = run.record
    if record.get("protocol") != dict(protocol):
        write_json(run.file(paths.SPEC), {**record, "protocol": dict(protocol)})


def never_trained(path: Path) -> bool:
    """A run directory holding only the records a failed start leaves (no weights, metrics or results): such a
    run may be replaced by a different spec, so a corrected command is not refused as "a different run"."""
    return {p.name for p in path.iterdir()} <= {paths.SPEC, paths.LINEAGE}


def run_location(spec: Spec, stage: str, out: str | Path | None) -> Path:
    return Path(out).expanduser() if out is not None else paths.runs_root() / f"{stage}-{spec.spec_hash()}"


def prepare_run(spec: Spec, stage: str, out: str | Path | None = None) -> Run:
    """Create (or reopen) the directory for `spec`. A directory holding anything else is never touched."""
    path = run_location(spec, stage, out)
    run_id = spec.spec_hash()
    if path.exists():
        if not path.is_dir():
            raise OutputError(f"{path} exists and is not a directory; choose another --out")
        if (path / paths.SPEC).is_file():
            found = Run(path).id
            if found == run_id:
                return Run(path)
            if not never_trained(path):
                raise OutputError(f"{path} holds a different run ({found}, not {run_id}); choose another --out")
            (path / paths.LINEAGE).unlink(missing_ok=True)  # a failed start's records are replaced below
        elif any(path.iterdir()):
            raise OutputError(f"{path} exists and is not a prunectl run; choose another --out")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot create {path}: {err.strerror}") from None
    record = {"kind": type(spec).__name__, "id": run_id, "stage": stage, "prunectl": __version__,
              "spec": spec.to_dict()}
    write_json(path / paths.SPEC, record)
    return Run(path)
