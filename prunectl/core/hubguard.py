"""Distrust of the Hub: revisions, commits and ETags are checked before huggingface_hub turns them into paths.

huggingface_hub (through 2.4.0, the newest release; none validates these) builds cache paths from values a
server sends: ``blobs/<ETag>`` (an ETag of ``"/abs/path"`` escapes the cache, because ``os.path.join`` drops
everything before an absolute part), ``refs/<revision>``, ``.no_exist/<X-Repo-Commit>/...``. So prunectl

* refuses a revision that is not a safe ref name before any request (`check_revision`);
* installs a response hook on huggingface_hub's shared HTTP client (`guard_session`) that rejects any response
  whose ``X-Repo-Commit`` is not 40 hex digits or whose ``X-Linked-Etag``/``ETag`` on a ``/resolve/`` URL is not a
  sha1 or sha256 digest -- the hook runs before the client reads the body or builds a path from the header;
* refuses a file whose declared size (``X-Linked-Size``/``Content-Length``) is over the download limit;
* checks every file of the downloaded snapshot is a regular file inside the repo's cache folder
  (`check_snapshot_files`) before anything is copied into a run.

See docs/security.md for the threat model.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any

from prunectl.core import limits
from prunectl.errors import BadValueError, HubError

COMMIT = re.compile(r"[0-9a-f]{40}")
_DIGEST = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")  # git blob sha1 (regular files) or sha256 (LFS / Xet)
# A branch, tag or commit: path segments of [A-Za-z0-9._-] that do not start with '.', no '..', no '.lock' end
# (the git ref-name rules that matter for a path), at most 255 characters.
_SEGMENT = r"[A-Za-z0-9_-][A-Za-z0-9._-]*"
_REVISION = re.compile(rf"{_SEGMENT}(/{_SEGMENT})*")


class UnsafeHubResponse(HubError):
    """The server sent a value that would become a path outside huggingface_hub's cache."""


def check_revision(revision: str, ref: str) -> str:
    """`revision` if it is a safe ref name (branch, tag, commit, refs/pr/N); else a one-line BadValueError."""
    if (len(revision) > 255 or not _REVISION.fullmatch(revision) or ".." in revision
            or revision.endswith(".lock") or revision.endswith(".")):
        raise BadValueError(f"invalid revision '{revision}' in '{ref}': a revision is a branch, tag or commit name "
                            "made of letters, digits and ._-/ (no '..', no leading '.' or '/')")
    return revision


def check_commit(commit: Any, what: str) -> str:
    """A resolved commit hash: exactly 40 lowercase hex digits, or an UnsafeHubResponse."""
    if not isinstance(commit, str) or not COMMIT.fullmatch(commit):
        raise UnsafeHubResponse(f"refusing {what}: the Hub answered with commit {str(commit)[:60]!r}, not a "
                                "40-hex-digit commit hash (is HF_ENDPOINT a trusted Hub?)")
    return commit


def _normalised_etag(value: str) -> str:
    return value[2:].strip('"') if value.startswith("W/") else value.strip('"')  # as huggingface_hub normalises it


def check_response(response: Any) -> None:
    """httpx response hook: refuse headers that huggingface_hub would turn into paths outside its cache."""
    headers = response.headers
    commit = headers.get("X-Repo-Commit")
    url = str(response.request.url)
    if commit is not None:
        check_commit(commit, f"the response from {url.split('?')[0]}")
    if "/resolve/" in url:
        etag = headers.get("X-Linked-Etag") or headers.get("ETag")
        if etag is not None and not _DIGEST.fullmatch(_normalised_etag(etag)):
            raise UnsafeHubResponse(f"refusing the response from {url.split('?')[0]}: its ETag {etag[:60]!r} is "
                                    "not a sha1/sha256 digest (is HF_ENDPOINT a trusted Hub?)")
        size = headers.get("X-Linked-Size") or headers.get("Content-Length")
        limit = limits.current().download_bytes
        if size is not None and size.strip().isdigit() and int(size) > limit:
            too_big = limits.exceeded(f"the size of {url.split('?')[0]} (bytes)", int(size), "download_bytes", limit)
            raise UnsafeHubResponse(str(too_big))


def guard_session() -> None:
    """Add `check_response` to huggingface_hub's shared client (idempotent; a user's own client factory is kept)."""
    from huggingface_hub import get_session

    session = get_session()
    hooks = session.event_hooks
    if check_response not in hooks.get("response", []):
        session.event_hooks = {**hooks, "response": [*hooks.get("response", []), check_response]}


def check_snapshot_files(folder: Path, names: list[str], label: str) -> None:
    """Each present file of a cached snapshot resolves to a regular file inside the repo's own cache folder."""
    storage = folder.parent.parent.resolve()  # <cache>/models--OWNER--REPO/snapshots/<commit>
    for name in names:
        path = folder / name
        if not os.path.lexists(path):
            continue
        real = path.resolve()
        try:
            mode = os.stat(real, follow_symlinks=False).st_mode
        except OSError:
            mode = 0
        if storage not in real.parents or not stat.S_ISREG(mode):
            raise UnsafeHubResponse(f"refusing {label}: its cached {name} points outside the Hugging Face cache "
                                    f"({real}); delete {storage} and pull again")


__all__ = ["COMMIT", "UnsafeHubResponse", "check_commit", "check_response", "check_revision",
           "check_snapshot_files", "guard_session"]
