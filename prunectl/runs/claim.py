"""Claiming a run: one lock file per run directory, so two processes (workers, `compare`s, Slurm jobs sharing the
store) never execute the same run at once.

The lock is `run.lock`, created with O_CREAT|O_EXCL (atomic on local file systems and on NFSv3+), holding who
took it: host, pid, the pid's start time, the Slurm job id if any, and a random token. The holder touches it
every `HEARTBEAT` seconds. A lock is stale, and is broken, when
- its pid is dead on this host (or has been reused: a different start time), or
- it was taken by this same Slurm job (a requeued job finds the lock of its pre-empted self), or
- nobody touched it for `STALE_AFTER` seconds (a holder on another host that died).
Each successful claim appends a line to `attempts.jsonl`: how often a run was started or resumed.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from prunectl import paths

HEARTBEAT = 30.0
STALE_AFTER = 300.0


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat); None where unknown."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()[19]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _slurm_job() -> str | None:
    return os.environ.get("SLURM_JOB_ID")


def owner_record() -> dict[str, Any]:
    """Who this process is, as written into a lock it takes."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "started": _start_time(pid), "slurm_job": _slurm_job(),
            "time": time.time(), "token": secrets.token_hex(8)}


def read_lock(run_dir: Path) -> dict[str, Any] | None:
    """The holder of `run_dir`'s lock; None when there is none. A lock still being written reads as {}."""
    try:
        text = (run_dir / paths.LOCK).read_text()
    except FileNotFoundError:
        return None
    try:
        return dict(json.loads(text))
    except (json.JSONDecodeError, TypeError):
        return {}


def is_stale(holder: dict[str, Any], age: float) -> bool:
    """Whether a lock held by `holder`, last touched `age` seconds ago, belongs to nobody alive."""
    if age > STALE_AFTER:
        return True
    if not holder:  # being written right now (or a torn write, which the age rule clears)
        return False
    if holder.get("slurm_job") and holder["slurm_job"] == _slurm_job():
        return True
    if holder.get("host") == socket.gethostname():
        pid = int(holder.get("pid", -1))
        if not _alive(pid):
            return True
        return holder.get("started") is not None and _start_time(pid) not in (None, holder["started"])
    return False


def _try_create(lock: Path, record: dict[str, Any]) -> bool:
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
    return True


def _break_if_stale(lock: Path) -> None:
    """Remove a stale lock. It is first renamed to a name of our own (atomic: of several breakers only one gets
    it), and put back should it turn out to be a fresh lock taken in between."""
    holder = read_lock(lock.parent)
    try:
        age = time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        return
    if holder is None or not is_stale(holder, age):
        return
    grave = lock.with_name(f"{lock.name}.stale-{secrets.token_hex(6)}")
    try:
        os.rename(lock, grave)
    except FileNotFoundError:
        return
    taken = read_lock_file(grave)
    if holder and taken.get("token") != holder.get("token"):
        with suppress(FileExistsError):
            os.link(grave, lock)  # a live lock, taken after we looked: restore it
    grave.unlink(missing_ok=True)


def read_lock_file(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError, TypeError):
        return {}


def try_claim(run_dir: Path) -> dict[str, Any] | None:
    """Take the lock of `run_dir` if it is free or stale; the record written, or None when someone holds it."""
    lock = run_dir / paths.LOCK
    record = owner_record()
    if _try_create(lock, record):
        return record
    _break_if_stale(lock)
    return record if _try_create(lock, record) else None


def release(run_dir: Path, record: dict[str, Any]) -> None:
    """Drop the lock, if it is still ours."""
    lock = run_dir / paths.LOCK
    if read_lock_file(lock).get("token") == record["token"]:
        lock.unlink(missing_ok=True)


@contextmanager
def holding(run_dir: Path, record: dict[str, Any]) -> Iterator[None]:
    """Keep a claimed lock fresh (a heartbeat thread touches it) until the block ends, then release it."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT):
            with suppress(OSError):
                os.utime(run_dir / paths.LOCK)

    thread = threading.Thread(target=beat, name="prunectl-lock-heartbeat", daemon=True)
    thread.start()
    try:
        with (run_dir / paths.ATTEMPTS).open("a") as log:
            log.write(json.dumps({k: v for k, v in record.items() if k != "token"}, sort_keys=True) + "\n")
        yield
    finally:
        stop.set()
        release(run_dir, record)


def attempts(run_dir: Path) -> list[dict[str, Any]]:
    """Every claim of the run so far (one per start or resume), oldest first."""
    path = run_dir / paths.ATTEMPTS
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
