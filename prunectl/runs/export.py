"""What `push` may upload from a run directory: its own regular files, checked and re-serialised.

A run directory can come from someone else (docs/security.md), so push never sends bytes it has not understood:
each file is opened without following a symbolic link and must be a regular file directly inside the run; JSON is
parsed, validated and uploaded re-serialised from the parsed content (anything appended to a file is dropped, a
non-JSON line is refused); the weights and mask are loaded and must fit the architecture before the commit.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors

from prunectl import paths
from prunectl.core import validate
from prunectl.core.io import parse_json
from prunectl.errors import ArtifactError
from prunectl.models import Arch
from prunectl.models.budget import meta_model

RECOVER = "push uploads only the run's own files: replace it with a regular copy of the file"


def read_regular(run_dir: Path, name: str) -> bytes:
    """The bytes of `run_dir/name`, which must be a regular file there (a symlink is refused, never followed)."""
    path = run_dir / name
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError as err:
        if err.errno == errno.ELOOP or path.is_symlink():
            raise ArtifactError(f"{path} is not a regular file (a symbolic link); {RECOVER}") from None
        raise ArtifactError(f"cannot read {path}: {err.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise ArtifactError(f"{path} is not a regular file; {RECOVER}")
        return f.read()


def _json_bytes(data: Any) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n").encode()


def _parse(run_dir: Path, name: str) -> Any:
    raw = read_regular(run_dir, name)
    try:
        return parse_json(raw.decode("utf-8"), run_dir / name)
    except UnicodeDecodeError as err:
        raise ArtifactError(f"{run_dir / name} is not valid JSON ({err})") from None


def _tensors(run_dir: Path, name: str) -> tuple[bytes, dict[str, Any]]:
    raw = read_regular(run_dir, name)
    try:
        return raw, load_safetensors(raw)
    except (SafetensorError, ValueError, OSError) as err:
        raise ArtifactError(f"{run_dir / name} is not a readable safetensors file ({err})") from None


def export_files(run_dir: Path) -> tuple[dict[str, bytes], Arch]:
    """The files push uploads (name -> bytes, config.json excluded) and the run's architecture, all checked."""
    files: dict[str, bytes] = {}
    record = validate.check_record(_parse(run_dir, paths.SPEC), run_dir / paths.SPEC)
    files[paths.SPEC] = _json_bytes(record)
    files[paths.RESULT] = _json_bytes(validate.check_result(_parse(run_dir, paths.RESULT), run_dir / paths.RESULT))
    arch_data = _parse(run_dir, paths.ARCH)
    if not isinstance(arch_data, dict):
        raise ArtifactError(f"{run_dir / paths.ARCH} is not an architecture record")
    arch = Arch.from_dict(arch_data)
    model = meta_model(arch)  # shapes only: nothing allocated
    raw, weights = _tensors(run_dir, paths.MODEL)
    validate.check_tensors_fit(weights, model.state_dict(), run_dir / paths.MODEL, what="weights file")
    files[paths.MODEL] = raw
    if (run_dir / paths.MASK).exists() or (run_dir / paths.MASK).is_symlink():
        raw, mask = _tensors(run_dir, paths.MASK)
        validate.check_mask(mask, model, run_dir / paths.MASK)
        files[paths.MASK] = raw
    if (run_dir / paths.LINEAGE).exists() or (run_dir / paths.LINEAGE).is_symlink():
        lineage = validate.check_lineage(_parse(run_dir, paths.LINEAGE), run_dir / paths.LINEAGE)
        files[paths.LINEAGE] = _json_bytes(lineage)
    if (run_dir / paths.METRICS).exists() or (run_dir / paths.METRICS).is_symlink():
        files[paths.METRICS] = _metrics_bytes(run_dir)
    return files, arch


def _metrics_bytes(run_dir: Path) -> bytes:
    path = run_dir / paths.METRICS
    try:
        text = read_regular(run_dir, paths.METRICS).decode("utf-8")
        lines = [parse_json(line, f"{path} line {i + 1}") for i, line in enumerate(text.splitlines()) if line.strip()]
    except UnicodeDecodeError as err:
        raise ArtifactError(f"{path} is not valid JSON lines ({err})") from None
    validate.check_metrics(lines, path)
    return "".join(json.dumps(m, sort_keys=True, allow_nan=False) + "\n" for m in lines).encode()


__all__ = ["export_files", "read_regular"]
