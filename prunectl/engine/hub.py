"""Engine stages `push` and `pull`: share a finished run on the Hugging Face Hub and bring one back as a run."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prunectl import __version__, paths
from prunectl.core import hub, validate
from prunectl.core.flops import FLOPS_LABEL
from prunectl.core.hub import HubRef, Snapshot
from prunectl.core.io import load_tensors, parse_json, read_json, temp_dir_beside, write_json
from prunectl.errors import ArtifactError, BadValueError, HubError, OutputError, PrunectlError
from prunectl.models import Arch, build_model
from prunectl.runs.export import export_files
from prunectl.runs.store import Run, load_weights, open_run

if TYPE_CHECKING:
    from huggingface_hub import ModelCardData

LIBRARY = "prunectl"
REQUIRED = (paths.CONFIG, paths.MODEL, paths.SPEC, paths.RESULT)
OPTIONAL = (paths.METRICS, paths.MASK, paths.LINEAGE)


def push(run: Run | str | Path, repo: str, *, revision: str | None = None, private: bool = False,
         commit_message: str | None = None) -> dict[str, Any]:
    """Upload a finished run to `hf:OWNER/REPO` in one commit: weights, config, spec, results, metrics and a card.

    >>> push("runs/train-d9c41f4db3a7", "hf:me/lenet-mnist")          # doctest: +SKIP
    {'repo_id': 'me/lenet-mnist', 'revision': 'main', 'commit': '5f0c...', 'url': 'https://huggingface.co/...'}
    """
    ref = hub.parse_ref(repo)
    if revision is not None and ref.revision is not None and revision != ref.revision:
        raise BadValueError(f"two revisions given: '{ref.revision}' in {repo} and --revision '{revision}'")
    ref = HubRef(ref.repo_id, revision or ref.revision)
    run = run if isinstance(run, Run) else open_run(run)
    if not os.path.lexists(run.file(paths.RESULT)):
        raise ArtifactError(f"run {run.path} has not finished (no {paths.RESULT})")
    if not os.path.lexists(run.file(paths.MODEL)):
        raise ArtifactError(f"run {run.path} has no {paths.MODEL} to push")
    checked, arch = export_files(run.path)  # regular files of the run only, parsed, re-serialised, shapes checked
    result = json.loads(checked[paths.RESULT])
    config = {**arch.to_dict(), "library_name": LIBRARY, "prunectl_version": __version__}
    files: dict[str, bytes | Path] = {paths.CONFIG: (json.dumps(config, indent=2, sort_keys=True, allow_nan=False) + "\n").encode(),
                                      **checked}
    data, body = _card(run, arch, result, ref)
    message = commit_message or f"prunectl push: {run.stage} run {run.id}"
    return hub.upload(ref, files, card_data=data, card_body=body, private=private, commit_message=message)


def _method(record: Mapping[str, Any]) -> str | None:
    method = record.get("spec", {}).get("method")
    if isinstance(method, Mapping):
        method = method.get("name") or method.get("method")
    return str(method) if method else None


def _card(run: Run, arch: Arch, result: Mapping[str, Any], ref: HubRef) -> tuple[ModelCardData, str]:
    """The card's metadata (ModelCardData) and its Markdown body: how this model was made."""
    record = run.record
    spec = record.get("spec", {})
    method = _method(record) or run.stage
    dataset = str(spec.get("dataset") or result.get("dataset") or "unknown")
    epochs = result.get("epochs") or spec.get("schedule", {}).get("epochs")
    parent = spec.get("parent") or result.get("parent")
    accuracy = result.get("final_acc")
    name = arch.name or arch.family
    lineage = {k: v for k, v in {"run": run.id, "stage": run.stage, "method": method, "parent": parent,
                                 "arch": name, "family": arch.family}.items() if v is not None}
    tags = list(dict.fromkeys(["pruning", LIBRARY, method, arch.family]))
    data = hub.card_metadata(model_name=ref.repo_id.split("/")[1], dataset=dataset, tags=tags, accuracy=accuracy,
                             extra={"prunectl": lineage})
    rows = [("stage", run.stage), ("method", method), ("architecture", f"{name} ({arch.family})"),
            ("dataset", dataset), ("epochs", epochs), ("parameters", _num(result.get("params"))),
            (FLOPS_LABEL, _num(result.get("flops"))),
            ("test accuracy, last epoch (%)", f"{accuracy:.2f}" if isinstance(accuracy, float | int) else "n/a"),
            ("seed", result.get("seed", spec.get("seed"))), ("run id", f"`{run.id}`"),
            ("parent run", f"`{parent}`" if parent else "none (trained from random initialisation)")]
    table = "\n".join(f"| {key} | {value} |" for key, value in rows)
    body = (f"# {ref.repo_id.split('/')[1]}\n\n"
            f"A {name} network ({arch.num_classes} classes, input {tuple(arch.input_size)}) made by the "
            f"`{run.stage}` stage of prunectl on `{dataset}`, after *Rethinking the Value "
            f"of Network Pruning* (Liu et al., ICLR 2019).\n\n| | |\n|---|---|\n{table}\n\n"
            "FLOPs are fvcore multiply-adds of conv and linear layers. `spec.json` holds the complete spec that "
            "rebuilds this run, `result.json` the final figures and `metrics.jsonl` the per-epoch curve.\n\n"
            f"## Use\n\n```bash\nprunectl pull {HubRef(ref.repo_id)}\n```\n")
    return data, body


def _num(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else "n/a"


def pull(ref: str, *, out: str | Path | None = None) -> Run:
    """Download `hf:OWNER/REPO[@REVISION]` and write it as a run directory (reused if already pulled).

    >>> run = pull("hf:me/lenet-mnist@main")                            # doctest: +SKIP
    >>> run.model()(x)                                                   # doctest: +SKIP
    """
    return pull_ref(hub.parse_ref(ref), out=out)


def pull_ref(ref: HubRef, *, out: str | Path | None = None, source: Mapping[str, Any] | None = None) -> Run:
    """Pull a resolved repo reference; other front doors (a zoo entry) call this with their own `source` notes."""
    snap = hub.download(ref, [*REQUIRED, *OPTIONAL], marker=paths.CONFIG)
    target = Path(out).expanduser() if out is not None else paths.runs_root() / f"pull-{_digest(snap)}"
    found = reuse_pulled(target, snap)
    if found is not None:
        return found
    arch = _check_snapshot(snap, ref)
    record = {"repo_id": snap.repo_id, "revision": ref.revision or "main", "commit": snap.commit,
              "endpoint": hub.endpoint(), "prunectl": __version__, **dict(source or {})}
    return materialise(snap, target, arch, record)


def _digest(snap: Snapshot) -> str:
    return hashlib.sha256(f"{snap.repo_id}@{snap.commit}".encode()).hexdigest()[:12]


def reuse_pulled(target: Path, snap: Snapshot) -> Run | None:
    """The run already pulled from the same commit at `target`; None if `target` is free; else OutputError."""
    if not target.exists():
        return None
    if target.is_dir() and not any(target.iterdir()):
        return None
    if target.is_dir() and (target / paths.SOURCE).is_file():
        src = read_json(target / paths.SOURCE)
        if src.get("repo_id") == snap.repo_id and src.get("commit") == snap.commit:
            changed = _changed_files(target, snap)
            if changed:
                raise ArtifactError(f"{target} is a pull of {snap.repo_id}@{snap.commit[:12]} but its {changed[0]} "
                                    "differs from the source (modified or damaged); delete the directory and pull "
                                    "again")
            return Run(target)
        raise OutputError(f"{target} holds a different pull ({src.get('repo_id')}@{str(src.get('commit'))[:12]}); "
                          "choose another --out")
    raise OutputError(f"{target} exists and is not a pulled prunectl run; choose another --out")


def _changed_files(target: Path, snap: Snapshot) -> list[str]:
    """Files materialise copied from the snapshot that are no longer byte-identical in `target` (sha256)."""
    def digest(path: Path, follow: bool) -> str | None:  # the cache's snapshot files are symlinks to its blobs
        if (path.is_symlink() and not follow) or not path.is_file():
            return None
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()

    names = (paths.MODEL, paths.SPEC, paths.RESULT, *OPTIONAL)
    return [n for n in names if digest(target / n, False) != digest(snap.path / n, True)]


def _check_snapshot(snap: Snapshot, ref: HubRef) -> Arch:
    """Everything a pull writes is checked first: a prunectl config, all files, weights that fit the arch."""
    label = f"{HubRef(snap.repo_id)}@{snap.commit[:12]}"
    config_path = snap.path / paths.CONFIG
    config = _json(config_path, label) if config_path.is_file() else None
    if not isinstance(config, dict) or config.get("library_name") != LIBRARY:
        raise HubError(f"{ref} is not a prunectl model (its {paths.CONFIG} does not say "
                       f"\"library_name\": \"{LIBRARY}\")")
    missing = [name for name in REQUIRED if not (snap.path / name).is_file()]
    if missing:
        raise HubError(f"{ref} is missing {', '.join(missing)}; push it again with `prunectl push`")
    validate.check_record(_json(snap.path / paths.SPEC, label), f"{label}/{paths.SPEC}")
    validate.check_result(_json(snap.path / paths.RESULT, label), f"{label}/{paths.RESULT}")
    if (snap.path / paths.LINEAGE).is_file():
        validate.check_lineage(_json(snap.path / paths.LINEAGE, label), f"{label}/{paths.LINEAGE}")
    fields = {k: v for k, v in config.items() if k not in ("library_name", "prunectl_version")}
    try:
        arch = Arch.from_dict(fields)
        model = build_model(arch)
    except PrunectlError:
        raise
    except (KeyError, TypeError, ValueError, IndexError) as err:
        raise ArtifactError(f"{paths.CONFIG} in {label} does not describe a buildable architecture: {err}") from None
    load_weights(model, _tensors(snap.path / paths.MODEL, label), source=f"{label}/{paths.MODEL}")
    if (snap.path / paths.MASK).is_file():
        validate.check_mask(_tensors(snap.path / paths.MASK, label), model, f"{label}/{paths.MASK}")
    if (snap.path / paths.METRICS).is_file():
        Run(snap.path).metrics()  # one JSON object per line
    return arch


def _json(path: Path, label: str) -> Any:
    try:
        return parse_json(path.read_text(), f"{path.name} in {label}")
    except (OSError, UnicodeDecodeError) as err:
        raise ArtifactError(f"{path.name} in {label} is not valid JSON ({err})") from None


def _tensors(path: Path, label: str) -> dict[str, Any]:
    try:
        return load_tensors(path)
    except ArtifactError as err:  # name the file by its repo, not by its place in the cache
        raise ArtifactError(str(err).replace(str(path), f"{label}/{path.name}")) from None


def materialise(snap: Snapshot, target: Path, arch: Arch, source: Mapping[str, Any]) -> Run:
    """Copy the snapshot into a temporary directory beside `target`, then rename it into place in one step."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_dir_beside(target)
    except OSError as err:
        raise OutputError(f"cannot create {target}: {err.strerror}") from None
    try:
        for name in (paths.MODEL, paths.SPEC, paths.RESULT, *OPTIONAL):
            if (snap.path / name).is_file():
                shutil.copyfile(snap.path / name, tmp / name)
        write_json(tmp / paths.ARCH, arch.to_dict())
        write_json(tmp / paths.SOURCE, dict(source))
        if target.is_dir() and not any(target.iterdir()):
            target.rmdir()
        os.rename(tmp, target)
    except OSError as err:
        found = reuse_pulled(target, snap) if target.exists() else None  # another pull of the same commit won the race
        if found is not None:
            return found
        raise OutputError(f"cannot write {target}: {err.strerror or err}") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return Run(target)


__all__ = ["pull", "pull_ref", "push"]
