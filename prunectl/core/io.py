"""Atomic file writes and safetensors/JSON helpers: a crash never leaves a half-written artefact."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from prunectl.core import limits
from prunectl.errors import ArtifactError, BadValueError, OutputError


def current_umask() -> int:
    """The process's umask (os.umask can only be read by setting it, so it is set back at once)."""
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode `open()` would give a new file: 0o666 less the umask (a group-readable store stays readable)."""
    return 0o666 & ~current_umask()


def dir_mode() -> int:
    """The mode `mkdir` would give a new directory: 0o777 less the umask."""
    return 0o777 & ~current_umask()


def temp_dir_beside(target: Path) -> Path:
    """A new hidden directory beside `target` to fill and rename into place, with the umask's mode (mkdtemp
    alone makes it 0700, so a run pulled into a shared store would be unreadable by the group)."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    os.chmod(tmp, dir_mode())
    return tmp


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed over `path`, on failure removed.

    The file gets the mode a plain `open()` would give it (mkstemp makes 0600, which would hide every artefact of
    a shared run store from the group).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def new_file(path: Path, option: str) -> None:
    """Refuse an output path that is a directory or already exists: such outputs are never overwritten."""
    if path.is_dir():
        raise OutputError(f"{path} is a directory; give {option} a file name, e.g. {path / 'arch.json'}")
    if path.exists() or path.is_symlink():
        raise OutputError(f"{path} already exists and is never overwritten; remove it or choose another {option}")


def write_text(path: Path, text: str) -> None:
    try:
        with atomic_path(path) as tmp:
            tmp.write_text(text)
    except OSError as err:
        raise OutputError(f"cannot write {path}: {err.strerror}") from None


def write_json(path: Path, data: Any) -> None:
    """Strict JSON (NaN or infinity is an error, never a bare `NaN` token), written atomically."""
    try:
        text = json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n"
    except ValueError as err:
        raise BadValueError(f"cannot write {path}: {err} (a non-finite number)") from None
    write_text(path, text)


def parse_json(text: str, source: Path | str) -> Any:
    """Parse JSON read from a run or the Hub: strict (no NaN), within the size and nesting limits."""
    lim = limits.current()
    if len(text) > lim.json_bytes:
        raise limits.exceeded(f"the size of {source} (characters)", len(text), "json_bytes", lim.json_bytes)
    try:
        data = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise limits.exceeded(f"the JSON nesting depth of {source}", lim.json_depth + 1, "json_depth",
                              lim.json_depth) from None
    except ValueError as err:  # JSONDecodeError, and the NaN/Infinity refusal
        raise ArtifactError(f"{source} is not valid JSON ({err})") from None
    limits.check_json_depth(data, str(source))
    return data


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"'{name}' is not a JSON number")


def read_json(path: Path) -> Any:
    try:
        size = path.stat().st_size
        lim = limits.current()
        if size > lim.json_bytes:
            raise limits.exceeded(f"the size of {path} (bytes)", size, "json_bytes", lim.json_bytes)
        return parse_json(path.read_text(), path)
    except FileNotFoundError:
        raise ArtifactError(f"missing {path}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ArtifactError(f"cannot read {path}: {err}") from None


def save_tensors(path: Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> None:
    """Write a safetensors file atomically (contiguous CPU copies; shared storage is fine)."""
    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    try:
        with atomic_path(path) as tmp:
            save_file(flat, str(tmp), metadata=dict(metadata) if metadata else None)
    except OSError as err:
        raise OutputError(f"cannot write {path}: {err.strerror}") from None
    except SafetensorError as err:  # safetensors reports I/O failures (a full disk: ENOSPC) as its own type
        raise OutputError(f"cannot write {path}: {' '.join(str(err).split())[:200]}; free some space (or check the "
                          "disk) and rerun: nothing was half-written") from None


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise ArtifactError(f"missing {path}") from None
    except (SafetensorError, OSError, ValueError) as err:
        raise ArtifactError(f"{path} is not a readable safetensors file ({err})") from None


def tensors_metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError) as err:
        raise ArtifactError(f"{path} is not a readable safetensors file ({err})") from None
