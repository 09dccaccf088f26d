"""What identifies a user dataset: its canonical name (absolute path, sorted options) and a content fingerprint.

A run id hashes its spec, so a user dataset named by a path must be named the same way wherever it is asked for
(``npz:data/x.npz`` from the working directory and ``npz:/home/me/data/x.npz`` are one dataset), and its content
must be part of the spec, so the same relative path holding other data elsewhere is another run. Built-in datasets
(``mnist5k``, ``cifar10``, ...) are their names: no fingerprint, so their run ids never move.

The fingerprint is ``sha256:<hex>`` of the .npz file, or of an ImageFolder tree (the sorted lines
``<relative path>\\t<size>\\t<sha256 of the file>`` of every non-hidden file under its ``train/``, ``val/`` and
``test/`` folders). Hashes are cached in ``<prunectl home>/cache/fingerprints.json`` by (path, size, mtime_ns) —
for a tree, by the digest of every file's (path, size, mtime_ns) — so a call after the first only stats the files.
A file modified within `RACY_SECONDS` of being hashed is not cached (the next call hashes it again): a second
write in the same mtime tick with the same size would otherwise go unseen.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from prunectl import paths
from prunectl.core.io import write_json
from prunectl.data.base import locate
from prunectl.errors import ArtifactError, BadValueError, DataUnavailableError, OutputError

NPZ, IMAGEFOLDER = "npz:", "imagefolder:"
TREE_SPLITS = ("train", "val", "test")
CACHE_NAME = "fingerprints.json"
CACHE_VERSION = 1
CACHE_MAX_ENTRIES = 256
RACY_SECONDS = 2.0
CHUNK = 1 << 20


def is_user_dataset(name: str) -> bool:
    """Whether `name` is a dataset of the user's own files (``npz:PATH``, ``imagefolder:PATH``)."""
    return name.startswith((NPZ, IMAGEFOLDER))


def canonical_dataset(name: str, data_dir: str | Path | None = None) -> tuple[str, str | None]:
    """(canonical name, fingerprint) of a dataset; the one place where a dataset name becomes what a spec holds.

    A user dataset's path is located as its loader does (as given, else under the data directory), resolved to an
    absolute path, and its ``?key=value`` options are sorted (integers written plainly): ``npz:d.npz?pad=02&flip=1``
    run in /data becomes ``npz:/data/d.npz?flip=1&pad=2``. Built-in names come back as they are, with None.
    """
    if not is_user_dataset(name):
        return name, None
    prefix = NPZ if name.startswith(NPZ) else IMAGEFOLDER
    path_text, _, query = name[len(prefix):].partition("?")
    if not path_text:
        raise BadValueError(f"dataset {name!r} names no path")
    path = _existing(prefix, locate(path_text, data_dir)).resolve()
    canonical = f"{prefix}{path}" + (f"?{_normalise(query, name)}" if query.strip("&") else "")
    return canonical, _fingerprint(prefix, path)


def verify_dataset(name: str, expected: str | None, *, run: str, consequence: str) -> None:
    """Raise a one-line error if the data `name` points at no longer has the fingerprint `expected`.

    `run` names the run whose spec holds `expected` ("train-1a2b3c4d5e6f"); `consequence` says what a mismatch
    means for the caller ("the stored run was trained on other data"). Specs without a fingerprint (built-in
    datasets, runs made before fingerprints existed) pass unchecked.
    """
    if expected is None or not is_user_dataset(name):
        return
    prefix = NPZ if name.startswith(NPZ) else IMAGEFOLDER
    path = Path(name[len(prefix):].partition("?")[0])
    what = "npz file" if prefix == NPZ else "image folder"
    if not path.is_absolute() or not (path.is_file() if prefix == NPZ else path.is_dir()):
        raise DataUnavailableError(f"{what} {path} not found: run {run} was made from it")
    actual = _fingerprint(prefix, path)
    if actual != expected:
        raise ArtifactError(f"{what} {path} has changed since run {run} was made from it ({_short(expected)} then, "
                            f"{_short(actual)} now): {consequence}; put the original data back, or train a new "
                            f"baseline on this data")


def file_fingerprint(path: Path) -> str:
    """``sha256:<hex>`` of one file's bytes, from the cache when its size and mtime are those cached."""
    path = Path(path).resolve()
    stat = path.stat()
    key = f"file:{path}"
    stamp = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    cached = _cache_get(key, stamp)
    if cached is not None:
        return cached
    digest = "sha256:" + _sha256(path)
    if path.stat().st_mtime_ns == stat.st_mtime_ns and not _racy(stat.st_mtime_ns):
        _cache_put(key, stamp, digest)
    return digest


def tree_fingerprint(root: Path) -> str:
    """``sha256:<hex>`` of an ImageFolder tree: its files' relative paths, sizes and contents, in sorted order."""
    root = Path(root).resolve()
    files = _tree_files(root)
    listing = [(rel, st.st_size, st.st_mtime_ns) for rel, _, st in files]
    stamp = {"stat": hashlib.sha256(json.dumps(listing).encode()).hexdigest(), "files": len(files)}
    key = f"tree:{root}"
    cached = _cache_get(key, stamp)
    if cached is not None:
        return cached
    lines = hashlib.sha256()
    for rel, path, st in files:
        lines.update(f"{rel}\t{st.st_size}\t{_sha256(path)}\n".encode())
    digest = "sha256:" + lines.hexdigest()
    if not any(_racy(mtime) for _, _, mtime in listing):
        _cache_put(key, stamp, digest)
    return digest


def cache_file() -> Path:
    return paths.home() / "cache" / CACHE_NAME


# ---------- internals ----------


def _existing(prefix: str, path: Path) -> Path:
    """The located path, or the loaders' one-line error when it is not there."""
    if prefix == NPZ and not path.is_file():
        raise DataUnavailableError(f"npz file {path} not found (relative paths are tried in the working directory, "
                                   f"then in --data-dir)")
    if prefix == IMAGEFOLDER and not path.is_dir():
        raise DataUnavailableError(f"image folder {path} not found (relative paths are tried in the working "
                                   f"directory, then in --data-dir)")
    return path


def _normalise(query: str, name: str) -> str:
    """``pad=02&flip=1`` → ``flip=1&pad=2``: keys sorted, the last of a repeated key kept, integers canonical.
    Which keys a dataset accepts is its loader's business (it rejects unknown ones with their list)."""
    options: dict[str, str] = {}
    for item in filter(None, query.split("&")):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise BadValueError(f"dataset option {item!r} in {name!r} is not KEY=VALUE")
        options[key] = str(int(value)) if value.strip().lstrip("+-").isdigit() else value
    return "&".join(f"{k}={options[k]}" for k in sorted(options))


def _fingerprint(prefix: str, path: Path) -> str:
    try:
        return file_fingerprint(path) if prefix == NPZ else tree_fingerprint(path)
    except OSError as err:
        raise DataUnavailableError(f"cannot read {path} to fingerprint it ({err.strerror or err})") from None


def _tree_files(root: Path) -> list[tuple[str, Path, os.stat_result]]:
    """(posix relative path, path, stat) of every non-hidden file under the tree's split folders, sorted."""
    found = []
    for split in TREE_SPLITS:
        top = root / split
        if not top.is_dir():
            continue
        for folder, dirs, names in os.walk(top, followlinks=True):  # ImageFolder follows links too
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for file_name in names:
                if not file_name.startswith("."):
                    path = Path(folder, file_name)
                    found.append((path.relative_to(root).as_posix(), path, path.stat()))
    return sorted(found, key=lambda item: item[0])


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _short(fingerprint: str) -> str:
    return "sha256 " + fingerprint.removeprefix("sha256:")[:12]


def _racy(mtime_ns: int) -> bool:
    return time.time_ns() - mtime_ns < RACY_SECONDS * 1e9


def _read_cache() -> dict[str, Any]:
    """The cache's entries; an absent, unreadable or foreign cache is an empty one (it only saves time)."""
    try:
        data = json.loads(cache_file().read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION or not isinstance(data.get("entries"), dict):
        return {}
    return data["entries"]


def _cache_get(key: str, stamp: dict[str, Any]) -> str | None:
    entry = _read_cache().get(key)
    if isinstance(entry, dict) and entry.get("stamp") == stamp and str(entry.get("sha256", "")).startswith("sha256:"):
        return str(entry["sha256"])
    return None


def _cache_put(key: str, stamp: dict[str, Any], digest: str) -> None:
    """Add one entry (newest last, the oldest dropped beyond `CACHE_MAX_ENTRIES`), written atomically.
    Concurrent writers may drop each other's new entry; that costs a re-hash, never a wrong answer."""
    entries = _read_cache()
    entries.pop(key, None)
    entries[key] = {"stamp": stamp, "sha256": digest}
    kept = dict(list(entries.items())[-CACHE_MAX_ENTRIES:])
    with contextlib.suppress(OutputError, OSError):  # a read-only home only makes the next call hash again
        write_json(cache_file(), {"version": CACHE_VERSION, "entries": kept})


__all__ = ["canonical_dataset", "file_fingerprint", "is_user_dataset", "tree_fingerprint", "verify_dataset"]
