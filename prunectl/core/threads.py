"""How many CPU threads torch may use: ``--threads``, else $PRUNECTL_THREADS, else $OMP_NUM_THREADS, else a share.

OpenMP threads that outnumber the cores stall at every barrier (four prunectl processes on 2 cores, each with
torch's default of one thread per core, ran the quick recipe 25× slower), so the default is the cores this process
may run on (its CPU affinity), at most torch's own default, divided by the number of prunectl processes computing
on this machine under the same home right now. Each computing command holds a lock file
``<home>/procs/<host>-<pid>.lock`` while it runs (the host name keeps a home shared by cluster nodes from counting
other nodes' processes); the kernel drops the lock when the process dies, so a crashed run never counts. Processes started at the same
moment may not see each other; to share a machine between N runs for sure, give each ``--threads cores/N``.

torch is imported only when the count is applied, so `--help` stays fast.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import socket
import time
from collections.abc import Mapping
from pathlib import Path

from prunectl import paths
from prunectl.errors import BadValueError

THREADS_ENV = "PRUNECTL_THREADS"
OMP_ENV = "OMP_NUM_THREADS"
PROCS_DIR = "procs"
STALE_SECONDS = 60

_torch_default: list[int] = []  # torch's thread count before prunectl first set it
_held: dict[str, int] = {}  # lock file → its open descriptor, for as long as this process lives


def parse_threads(value: str | int, source: str) -> int:
    """A thread count ≥ 1 from an option or variable, or a one-line error naming where it came from."""
    text = str(value).strip()
    try:
        count = int(text)
    except ValueError:
        raise BadValueError(f"{source} must be a whole number of threads >= 1, got {text!r}") from None
    if count < 1:
        raise BadValueError(f"{source} must be a whole number of threads >= 1, got {count}")
    return count


def resolve_threads(option: str | int | None = None, environ: Mapping[str, str] | None = None,
                    default: int | None = None) -> tuple[int, str]:
    """(threads, where the number came from): the option, else $PRUNECTL_THREADS, else the first entry of
    $OMP_NUM_THREADS (it may be a list for nested levels, "4,2"), else `default` or `default_threads()`."""
    env = os.environ if environ is None else environ
    if option is not None and str(option) != "":
        return parse_threads(option, "--threads"), "--threads"
    if env.get(THREADS_ENV, "").strip():
        return parse_threads(env[THREADS_ENV], THREADS_ENV), THREADS_ENV
    if env.get(OMP_ENV, "").strip():
        return parse_threads(env[OMP_ENV].split(",")[0], OMP_ENV), OMP_ENV
    return (default if default is not None else default_threads()), "default"


def available_cores() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def default_threads(cores: int | None = None, torch_default: int | None = None, others: int | None = None) -> int:
    """min(cores, torch's default) shared among this and the `others` prunectl processes computing now.

    >>> default_threads(cores=16, torch_default=8, others=3)
    2
    >>> default_threads(cores=2, torch_default=2, others=5)
    1
    """
    cores = available_cores() if cores is None else cores
    if torch_default is None:
        torch_default = _initial_torch_threads()
    others = count_other_processes() if others is None else others
    return max(1, min(cores, torch_default) // (others + 1))


def apply_threads(option: str | int | None = None) -> tuple[int, str]:
    """Register this process as computing, resolve the count and give it to torch; returns (threads, source).

    Call it first thing in a command that computes. Inter-op threads are set too where torch still allows it
    (only before any inter-op work has started in the process).
    """
    import torch

    _initial_torch_threads()
    threads, source = resolve_threads(option)
    register_process()
    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # torch refuses once set, or once inter-op work has run
        torch.set_num_interop_threads(threads)
    return threads, source


def procs_dir() -> Path:
    return paths.home() / PROCS_DIR


def register_process() -> None:
    """Hold ``<home>/procs/<pid>.lock`` locked until this process exits (no-op where locks are unavailable)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock counting, the default is just the cores
        return
    path = procs_dir() / f"{_host()}-{os.getpid()}.lock"
    if str(path) in _held:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return  # a read-only or lock-less home: the default just ignores other processes
    _held[str(path)] = fd
    atexit.register(_release, path, fd)


def count_other_processes() -> int:
    """prunectl processes on this host, other than this one, that hold their lock under the home; stale files of
    ended processes are removed."""
    try:
        import fcntl
    except ImportError:
        return 0
    try:
        candidates = sorted(procs_dir().glob(f"{glob.escape(_host())}-*.lock"))
    except OSError:
        return 0
    others = 0
    for path in candidates:
        if str(path) in _held:
            continue
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            others += 1  # locked: its process is alive
        else:  # nobody holds it: its process has ended (a file seconds old may be one being created: leave it)
            if time.time() - os.fstat(fd).st_mtime > STALE_SECONDS:
                path.unlink(missing_ok=True)
        finally:
            os.close(fd)
    return others


def _release(path: Path, fd: int) -> None:
    """Remove this process's lock file at exit (a killed process leaves it, unlocked: counts remove it later)."""
    with contextlib.suppress(OSError):
        path.unlink()
        os.close(fd)


def _host() -> str:
    return socket.gethostname().replace("/", "_") or "localhost"


def _initial_torch_threads() -> int:
    if not _torch_default:
        import torch

        _torch_default.append(torch.get_num_threads())
    return _torch_default[0]


__all__ = ["apply_threads", "available_cores", "count_other_processes", "default_threads", "parse_threads",
           "register_process", "resolve_threads"]
