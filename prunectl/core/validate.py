"""Checks of every record read from a run directory (local, shared or pulled): schema, types, identity, shapes.

A run directory may come from someone else (a shared disk, the Hub), so nothing in it is trusted: each reader
in the run store passes what it parsed through one of these checks, and a violation is a one-line ArtifactError
that names the file and says how to recover. See docs/security.md.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from prunectl.errors import ArtifactError, BadValueError, PrunectlError

RUN_ID = re.compile(r"[0-9a-f]{12}")
_STAGE = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")  # a name, never a path
# result.json fields that are numbers when present (None allowed where a stage has no such figure)
NUMERIC_RESULT = ("final_acc", "final_loss", "best_acc", "best_epoch", "epochs", "wall_seconds",
                  "train_images_per_second", "params", "flops", "seed")
RESTORE = "restore it from where the run came from, or delete the run directory and run the stage again"


def _fail(path: Path | str, problem: str, recover: str = RESTORE) -> ArtifactError:
    return ArtifactError(f"{path}: {problem}; {recover}")


def record_shape(data: Any, path: Path | str) -> dict[str, Any]:
    """The structural part of a spec record: an object with kind, a 12-hex id, a stage name and a spec object."""
    if not isinstance(data, dict):
        raise _fail(path, f"a run spec record must be a JSON object, not {type(data).__name__}")
    run_id, stage = data.get("id"), data.get("stage", "train")
    if not isinstance(run_id, str) or not RUN_ID.fullmatch(run_id):
        raise _fail(path, f"run id {str(run_id)[:40]!r} is not 12 hex digits")
    if not isinstance(stage, str) or not _STAGE.fullmatch(stage):
        raise _fail(path, f"stage {str(stage)[:40]!r} is not a stage name")
    if not isinstance(data.get("kind"), str) or not isinstance(data.get("spec"), dict):
        raise _fail(path, "a run spec record needs a 'kind' name and a 'spec' object")
    return data


def check_record(data: Any, path: Path | str) -> dict[str, Any]:
    """A spec.json record whose id is the hash of its spec (an edited spec that kept its id is refused)."""
    from prunectl.core.spec import spec_from_record

    record = record_shape(data, path)
    try:
        actual = spec_from_record(record).spec_hash()
    except PrunectlError as err:
        raise _fail(path, f"its spec does not load ({err})") from None
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise _fail(path, f"its spec does not load ({type(err).__name__}: {err})") from None
    if actual != record["id"]:
        raise _fail(path, f"run id {record['id']} is not the hash of its spec ({actual}): the spec was edited")
    return record


def check_result(data: Any, path: Path | str) -> dict[str, Any]:
    """result.json: an object whose figures are finite numbers (or null)."""
    if not isinstance(data, dict):
        raise _fail(path, f"a result must be a JSON object, not {type(data).__name__}")
    for key in NUMERIC_RESULT:
        value = data.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise _fail(path, f"'{key}' must be a finite number, got {str(value)[:40]!r}")
    return data


def check_lineage(data: Any, path: Path | str) -> list[dict[str, Any]]:
    """lineage.json: a list of spec records (each checked like spec.json)."""
    if not isinstance(data, list):
        raise _fail(path, f"a lineage is not a list (got {type(data).__name__})")
    return [check_record(item, f"{path} entry {i}") for i, item in enumerate(data)]


def check_metrics(lines: list[Any], path: Path | str) -> list[dict[str, Any]]:
    """metrics.jsonl: one JSON object per line."""
    for i, item in enumerate(lines):
        if not isinstance(item, dict):
            raise _fail(path, f"line {i + 1} is not a JSON object")
    return lines


def check_tensors_fit(found: Mapping[str, torch.Tensor], own: Mapping[str, torch.Tensor], path: Path | str, *,
                      what: str, recover: str = RESTORE, subset: bool = False) -> None:
    """`found` has exactly the names (or, with `subset`, only names) of `own`, each with the same shape."""
    missing = [] if subset else sorted(set(own) - set(found))
    extra = sorted(set(found) - set(own))
    bad = sorted(k for k in set(own) & set(found) if tuple(own[k].shape) != tuple(found[k].shape))
    if missing or extra or bad:
        first = (missing or extra or bad)[0]
        raise _fail(path, f"the {what} does not fit the model ({len(missing)} missing, {len(extra)} unexpected, "
                          f"{len(bad)} wrong shape; e.g. '{first}')", recover)


def check_mask(mask: Mapping[str, torch.Tensor], model: torch.nn.Module, path: Path | str) -> None:
    """A mask names only parameters of `model`, with their shapes, and holds only 0s and 1s."""
    check_tensors_fit(mask, dict(model.named_parameters()), path, what="mask", subset=True)
    for name, m in mask.items():
        if not bool(((m == 0) | (m == 1)).all()):
            raise _fail(path, f"mask '{name}' holds values other than 0 and 1")


RESTART = "delete the checkpoint to restart this run"


def check_checkpoint(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, str], model: torch.nn.Module,
                     path: Path | str) -> None:
    """A training checkpoint holds this model's tensors (names and shapes) and readable resume metadata."""
    weights = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    check_tensors_fit(weights, model.state_dict(), path, what="checkpoint", recover=RESTART)
    try:
        int(meta["epoch"]), float(meta["wall_seconds"])
        history, groups = json.loads(meta["history"]), json.loads(meta["param_groups"])
        if not isinstance(history, list) or not isinstance(groups, list):
            raise TypeError("history and param_groups must be lists")
        for key in tensors:
            if key.startswith("optim."):
                int(key.split(".", 2)[1])
    except (KeyError, ValueError, TypeError, IndexError) as err:
        raise _fail(path, f"not a checkpoint of this run ({type(err).__name__}: {err})", RESTART) from None


def check_finite(metrics: Mapping[str, Any], epoch: int, run_dir: Path | str) -> None:
    """Stop a diverged run: a non-finite loss is a one-line error; the previous epoch's checkpoint stays."""
    for key in ("train_loss", "test_loss"):
        value = metrics.get(key)
        if isinstance(value, float) and not math.isfinite(value):
            raise BadValueError(f"training diverged: {key} is {value} in epoch {epoch} (lr {metrics.get('lr')}); "
                                f"the checkpoint of the last good epoch is kept in {run_dir}; try a lower --lr")


__all__ = ["RESTART", "RUN_ID", "check_checkpoint", "check_finite", "check_lineage", "check_mask", "check_metrics", "check_record", "check_result",
           "check_tensors_fit", "record_shape"]
