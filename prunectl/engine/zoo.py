"""The model zoo: the papers' architectures (and trained weights, when exported) as JSON entries, `zoo:NAME`."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prunectl import __version__, paths
from prunectl.core import hub
from prunectl.core.flops import FLOPS_LABEL, count
from prunectl.core.hub import HF_PREFIX, Snapshot
from prunectl.core.io import read_json, temp_dir_beside, write_json
from prunectl.data import dataset_shape
from prunectl.engine.derive import method_of
from prunectl.engine.hub import materialise, pull_ref, reuse_pulled
from prunectl.errors import ArtifactError, BadValueError, OutputError, UnknownNameError
from prunectl.models import Arch, build_model
from prunectl.runs.store import Run, load_weights, open_run

ZOO_PREFIX = "zoo:"
ZOO_ENV = paths.ZOO_ENV  # overrides the packaged zoo (tests, maintainers preparing a release)
ENTRIES = paths.ZOO_ENTRIES
WEIGHTS = paths.ZOO_WEIGHTS
PACKAGED = "packaged"  # the `revision` a pull of packaged weights records in source.json
ENTRY_SCHEMA = 1
# Files of a finished run that a packaged entry keeps; the first three are required.
RUN_FILES = (paths.MODEL, paths.SPEC, paths.RESULT, paths.METRICS, paths.MASK, paths.LINEAGE)
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


def zoo_root(root: str | Path | None = None) -> Path:
    """Where the zoo lives: `root`, else `paths.zoo_root()` ($PRUNECTL_ZOO_DIR, else the shipped zoo)."""
    return Path(root).expanduser() if root is not None else paths.zoo_root()


@dataclass(frozen=True)
class ZooEntry:
    """One zoo model: a paper's architecture with its counts, where it comes from, and its weights if any.

    `params` and `flops` (multiply-adds) are the dense counts of `arch` at its input size; `paper_accuracy`
    holds only numbers with a `citation`; `weights` is None (architecture only), ``"weights/NAME"`` (files
    packaged under the zoo root) or ``"hf:OWNER/REPO@REV"``; `measured` is the exported run's own result.

    >>> entry = get_entry("vgg16-a-cifar10")
    >>> entry.arch.family, entry.has_weights
    ('cifar_vgg', False)
    """

    name: str
    dataset: str
    method: str
    description: str
    source: str
    arch: Arch
    params: int
    flops: int
    paper_accuracy: Mapping[str, Any] | None = None
    weights: str | None = None
    measured: Mapping[str, Any] | None = None
    masked: bool = False
    root: Path | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        check_name(self.name)
        if self.weights is not None and not self.weights.startswith(HF_PREFIX) \
                and self.weights != f"{WEIGHTS}/{self.name}":
            raise ArtifactError(f"zoo entry '{self.name}': weights must be null, '{WEIGHTS}/{self.name}' or "
                                f"an hf:OWNER/REPO@REV reference, got {self.weights!r}")
        if self.paper_accuracy is not None and "citation" not in self.paper_accuracy:
            raise ArtifactError(f"zoo entry '{self.name}': paper_accuracy needs a citation")

    @property
    def has_weights(self) -> bool:
        return self.weights is not None

    @property
    def weights_path(self) -> Path:
        """The folder of packaged weights (meaningful only when `weights` is ``"weights/NAME"``)."""
        return zoo_root(self.root) / str(self.weights)

    def to_dict(self) -> dict[str, Any]:
        return {"schema": ENTRY_SCHEMA, "name": self.name, "dataset": self.dataset, "method": self.method,
                "description": self.description, "source": self.source, "arch": self.arch.to_dict(),
                "params": self.params, "flops": self.flops, "flops_unit": FLOPS_LABEL,
                "paper_accuracy": _plain(self.paper_accuracy), "weights": self.weights,
                "measured": _plain(self.measured), "masked": self.masked}

    def summary(self) -> dict[str, Any]:
        """The entry without its per-layer architecture (what `zoo list --json` prints)."""
        d = self.to_dict()
        arch = d.pop("arch")
        return {**d, "family": arch["family"], "num_classes": arch["num_classes"], "input_size": arch["input_size"]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], root: Path | None = None) -> ZooEntry:
        try:
            if d.get("schema", ENTRY_SCHEMA) != ENTRY_SCHEMA:
                raise ArtifactError(f"zoo entry schema {d['schema']} is not supported (expected {ENTRY_SCHEMA})")
            return cls(name=d["name"], dataset=d["dataset"], method=d["method"], description=d["description"],
                       source=d["source"], arch=Arch.from_dict(d["arch"]), params=int(d["params"]),
                       flops=int(d["flops"]), paper_accuracy=d.get("paper_accuracy"), weights=d.get("weights"),
                       measured=d.get("measured"), masked=bool(d.get("masked", False)), root=root)
        except (KeyError, TypeError, ValueError) as err:
            raise ArtifactError(f"not a zoo entry: missing or malformed field {err}") from None


def _plain(value: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return None if value is None else dict(value)


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise BadValueError(f"zoo names are lowercase letters, digits, '.', '_' and '-'; got {name!r}")
    return name


def entry_file(name: str, root: str | Path | None = None) -> Path:
    return zoo_root(root) / ENTRIES / f"{name}.json"


def list_entries(root: str | Path | None = None) -> list[ZooEntry]:
    """Every entry under the zoo root, by dataset then name."""
    folder = zoo_root(root) / ENTRIES
    found = [_load(path, root) for path in sorted(folder.glob("*.json"))] if folder.is_dir() else []
    return sorted(found, key=lambda e: (e.dataset, e.name))


def _load(path: Path, root: str | Path | None) -> ZooEntry:
    entry = ZooEntry.from_dict(read_json(path), zoo_root(root))
    if entry.name != path.stem:
        raise ArtifactError(f"{path} holds zoo entry '{entry.name}'; the file must be named {entry.name}.json")
    return entry


def get_entry(name: str, root: str | Path | None = None) -> ZooEntry:
    """One entry by name; an unknown name raises UnknownNameError with the closest names."""
    path = entry_file(name, root) if _NAME.match(name) else None
    if path is None or not path.is_file():
        raise UnknownNameError("zoo entry", name, [e.name for e in list_entries(root)])
    return _load(path, root)


def write_entry(entry: ZooEntry, root: str | Path | None = None) -> Path:
    """Write (atomically) the entry's JSON file under the zoo root."""
    path = entry_file(entry.name, root)
    write_json(path, entry.to_dict())
    return path


# --- zoo:NAME references ---------------------------------------------------------------------------------------

def is_zoo_ref(target: str) -> bool:
    return target.startswith(ZOO_PREFIX)


def entry_name(target: str) -> str:
    """The NAME of `zoo:NAME` (or a bare name)."""
    name = target[len(ZOO_PREFIX):] if is_zoo_ref(target) else target
    if not name:
        raise BadValueError("write zoo:NAME (see `prunectl zoo list`)")
    return name


def zoo_arch(target: str, dataset: str | None = None, root: str | Path | None = None) -> tuple[Arch, Path | None]:
    """`resolve_arch` for `zoo:NAME`: the architecture, plus the pulled run when its mask matters for counts."""
    entry = get_entry(entry_name(target), root)
    if dataset is not None and dataset_shape(dataset) != (entry.arch.num_classes, entry.arch.input_size):
        raise BadValueError(f"zoo entry '{entry.name}' is for {entry.dataset} ({entry.arch.num_classes} classes, "
                            f"input {entry.arch.input_size}), not {dataset}; leave out --dataset")
    if entry.masked and entry.has_weights:
        return entry.arch, pull_entry(entry.name, root=root).path
    return entry.arch, None


def zoo_source(target: str, root: str | Path | None = None) -> tuple[Arch, Run | None]:
    """`resolve_source` for `zoo:NAME`: the pulled run when the entry has weights, else the architecture alone."""
    entry = get_entry(entry_name(target), root)
    if not entry.has_weights:
        return entry.arch, None
    run = pull_entry(entry.name, root=root)
    return run.arch(), run


# --- pull ------------------------------------------------------------------------------------------------------

def pull_entry(name: str, out: str | Path | None = None, *, root: str | Path | None = None) -> Run:
    """Write an entry's weights as a run directory (packaged: offline; Hub-backed: through `pull_ref`).

    >>> run = pull_entry("vgg16-a-cifar10-trained")                     # doctest: +SKIP
    >>> run.model()                                                      # doctest: +SKIP
    """
    entry = get_entry(entry_name(name), root)
    if entry.weights is None:
        raise BadValueError(f"zoo entry '{entry.name}' is architecture-only (no weights to pull); use "
                            f"`prunectl info zoo:{entry.name}` or `prunectl scratch zoo:{entry.name} --reference RUN`")
    if entry.weights.startswith(HF_PREFIX):
        return pull_ref(hub.parse_ref(entry.weights), out=out, source={"zoo": entry.name})
    folder = entry.weights_path
    snap = Snapshot(folder, f"{ZOO_PREFIX}{entry.name}", PACKAGED, _digest(entry, folder))
    target = Path(out).expanduser() if out is not None else paths.runs_root() / f"zoo-{entry.name}-{snap.commit[:12]}"
    found = reuse_pulled(target, snap)
    if found is not None:
        return found
    load_weights(build_model(entry.arch), Run(folder).weights(), source=folder / paths.MODEL)
    source = {"repo_id": snap.repo_id, "revision": PACKAGED, "commit": snap.commit, "zoo": entry.name,
              "prunectl": __version__}
    return materialise(snap, target, entry.arch, source)


def _digest(entry: ZooEntry, folder: Path) -> str:
    """sha256 over the packaged files: the 'commit' that tells one packaged version from another."""
    missing = [n for n in RUN_FILES[:3] if not (folder / n).is_file()]
    if missing:
        raise ArtifactError(f"zoo entry '{entry.name}': {folder} lacks {', '.join(missing)}; export it again")
    digest = hashlib.sha256()
    for name in RUN_FILES:
        if (folder / name).is_file():
            digest.update(name.encode() + b"\0" + hashlib.sha256((folder / name).read_bytes()).digest())
    return digest.hexdigest()


# --- export (maintainers) --------------------------------------------------------------------------------------

def export_run(run: Run | str | Path, name: str, *, description: str, dataset: str | None = None,
               method: str | None = None, source: str | None = None,
               paper_accuracy: Mapping[str, Any] | None = None, hub_ref: str | None = None,
               root: str | Path | None = None, replace: bool = False) -> ZooEntry:
    """Add a finished run to the zoo: its files under ``weights/NAME/`` (or only a pointer to `hub_ref`, a
    pushed copy of it) and ``entries/NAME.json``. Maintainers run this on trained runs before a release.

    >>> export_run("runs/scratch-b-1a2b3c4d5e6f", "vgg16-a-cifar10-scratch-b",
    ...            description="VGG-16-A, scratch-B, CIFAR-10")          # doctest: +SKIP
    """
    run = run if isinstance(run, Run) else open_run(run)
    check_name(name)
    result = run.result()
    if not run.has(paths.MODEL):
        raise ArtifactError(f"run {run.path} has no {paths.MODEL} to export")
    path = entry_file(name, root)
    if path.exists() and not replace:
        raise OutputError(f"zoo entry '{name}' exists at {path}; pass replace=True to overwrite it")
    if hub_ref is not None:
        hub.parse_ref(hub_ref)
    arch = Arch.from_dict({**run.arch().to_dict(), "name": name})
    counts = count(build_model(arch), arch.input_size)
    measured: dict[str, Any] = {k: result[k] for k in ("final_acc", "best_acc", "epochs", "stage", "seed", "params",
                                                       "flops") if k in result}
    entry = ZooEntry(
        name=name, dataset=dataset or str(result.get("dataset") or run.record["spec"].get("dataset")),
        method=method or method_of(run) or ("baseline" if run.stage == "train" else run.stage),
        description=description, source=source or f"prunectl {run.stage} run {run.id}", arch=arch,
        params=counts.params, flops=counts.flops, paper_accuracy=paper_accuracy,
        weights=hub_ref or f"{WEIGHTS}/{name}", measured={**measured, "run_id": run.id},
        masked=run.has(paths.MASK), root=zoo_root(root),
    )
    if hub_ref is None:
        _copy_run_files(run, entry.weights_path)
    write_entry(entry, root)
    return entry


def _copy_run_files(run: Run, target: Path) -> None:
    """Copy the run's files into a temporary folder beside `target`, then swap it into place."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_dir_beside(target)
    except OSError as err:
        raise OutputError(f"cannot create {target}: {err.strerror}") from None
    old = target.with_name(f".{target.name}.old")
    try:
        for name in RUN_FILES:
            if run.has(name):
                shutil.copyfile(run.file(name), tmp / name)
        if target.exists():
            os.rename(target, old)
        os.rename(tmp, target)
    except OSError as err:
        if old.exists() and not target.exists():  # put the previous export back
            os.rename(old, target)
        raise OutputError(f"cannot write {target}: {err.strerror or err}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


__all__ = ["ZOO_PREFIX", "ZooEntry", "entry_name", "export_run", "get_entry", "is_zoo_ref", "list_entries",
           "pull_entry", "write_entry", "zoo_arch", "zoo_root", "zoo_source"]
