"""The local executor: the missing runs of each wave in N worker processes (`prunectl worker`, fed run
directories on stdin), the CPU threads split between them and, where GPUs are present, one GPU per worker via
CUDA_VISIBLE_DEVICES. Workers live as long as the executor, so each pays Python's and torch's start-up once."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from prunectl import paths
from prunectl.engine.executors.base import Failure, raise_failures, threads_per_worker
from prunectl.engine.waves import Job
from prunectl.errors import BadValueError


def visible_gpus() -> list[str]:
    """The GPUs workers may be given: CUDA_VISIBLE_DEVICES's entries if set, else every device torch sees."""
    if (env := os.environ.get("CUDA_VISIBLE_DEVICES")) is not None:
        return [g for g in env.split(",") if g.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


@dataclass(eq=False)
class _Worker:
    slot: int
    process: subprocess.Popen[str]
    log: IO[str]
    current: Job | None = None
    started: float = 0.0
    alive: bool = True
    reader: threading.Thread = field(init=False)


class LocalExecutor:
    """Up to `jobs` workers at once. A run's output goes to run.log in its run directory; a worker that dies
    (or a run that raises) fails that run only: the others of the wave go on, and a dead worker is replaced."""

    one_seed_at_a_time = False

    def __init__(self, jobs: int, *, data_dir: str | Path | None = None, device: str | None = None,
                 threads: int | None = None, note: Callable[[str], None] = lambda message: None,
                 gpus: Sequence[str] | None = None) -> None:
        if jobs < 1:
            raise BadValueError(f"--jobs must be at least 1, got {jobs}")
        if threads is not None and threads < 1:
            raise BadValueError(f"--threads must be at least 1, got {threads}")
        self.jobs, self.data_dir, self.device, self.note = jobs, data_dir, device, note
        self.threads = threads if threads is not None else threads_per_worker(jobs)
        self.gpus = list(gpus) if gpus is not None else (visible_gpus() if device in (None, "auto", "cuda") else [])
        self.workers: dict[int, _Worker] = {}
        self.events: queue.Queue[tuple[_Worker, str | None]] = queue.Queue()
        self.started = 0  # worker processes started so far
        self.executed = 0  # runs handed to workers (a run served from the store is handed to none)

    # -- waves ------------------------------------------------------------------------------------------
    def run_wave(self, name: str, jobs: Sequence[Job]) -> None:
        todo = [job for job in jobs if not job.run.is_done()]
        if not todo:
            self.note(f"{name}: all {len(jobs)} run(s) from the store")
            return
        slots = min(self.jobs, len(todo))
        where = f"one GPU each ({', '.join(self.gpus)})" if self.gpus else f"{self.threads} CPU thread(s) each"
        self.note(f"{name}: {len(todo)} to run, {len(jobs) - len(todo)} from the store; {slots} worker(s), {where}")
        waiting, failures, finished = list(todo), [], 0
        busy = 0
        while waiting or busy:
            for slot in range(slots):
                worker = self._worker(slot)
                if waiting and worker.current is None:
                    busy += self._hand(worker, waiting.pop(0))
            if not busy:
                continue
            worker, line = self.events.get()
            job = worker.current
            reason: str | None
            if line is None:  # the worker is gone
                worker.alive = False
                code = worker.process.wait()
                worker.log.close()
                if job is None:
                    continue
                worker_log = paths.executor_root() / "local" / f"worker-{worker.slot}.log"
                reason = (f"worker exited {code}, see also {worker_log}" if code >= 0
                          else f"worker killed by signal {-code}")
            else:
                answer = json.loads(line)
                done = answer["ok"] and job is not None and job.run.is_done()
                reason = None if done else answer["error"] or "the run ended without its result.json"
            if job is None:
                continue
            worker.current, busy, finished = None, busy - 1, finished + 1
            seconds = time.perf_counter() - worker.started
            if reason is None:
                self.note(f"  [{finished}/{len(todo)}] {job.label}: done in {seconds:.1f} s")
            else:
                failures.append(Failure(job, reason))
                self.note(f"  [{finished}/{len(todo)}] {job.label}: FAILED ({reason}); log "
                          f"{job.run.file(paths.RUN_LOG)}")
        raise_failures(name, failures)

    def close(self) -> None:
        """End the workers (they exit at the end of their input)."""
        for worker in self.workers.values():
            if worker.alive and worker.process.stdin is not None:
                worker.process.stdin.close()
        for worker in self.workers.values():
            try:
                worker.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait()
            worker.log.close()
        self.workers.clear()

    def __del__(self) -> None:
        if getattr(self, "workers", None):
            self.close()

    # -- workers ----------------------------------------------------------------------------------------
    def _hand(self, worker: _Worker, job: Job) -> int:
        """Give `job` to `worker`; 1 if it was handed over (a worker that just died answers with EOF)."""
        worker.current, worker.started = job, time.perf_counter()
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        with job.run.file(paths.RUN_LOG).open("a") as log:
            log.write(f"== {stamp} local worker {worker.slot} (pid {worker.process.pid})\n")
        self.executed += 1
        try:
            assert worker.process.stdin is not None
            worker.process.stdin.write(str(job.run.path) + "\n")
            worker.process.stdin.flush()
        except (BrokenPipeError, OSError):
            pass  # its reader reports the death, and the run fails like any other killed run
        return 1

    def _worker(self, slot: int) -> _Worker:
        worker = self.workers.get(slot)
        if worker is not None and worker.alive:
            return worker
        env = dict(os.environ, OMP_NUM_THREADS=str(self.threads), MKL_NUM_THREADS=str(self.threads))
        if self.gpus:
            env["CUDA_VISIBLE_DEVICES"] = self.gpus[slot % len(self.gpus)]
        argv = [sys.executable, "-m", "prunectl", "worker", "--device", self.device or "auto",
                "--threads", str(self.threads)]
        if self.data_dir is not None:
            argv += ["--data-dir", str(Path(self.data_dir).expanduser().resolve())]
        folder = paths.executor_root() / "local"
        folder.mkdir(parents=True, exist_ok=True)
        log = (folder / f"worker-{slot}.log").open("a")  # what a worker prints outside any run
        process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=env,
                                   text=True, bufsize=1)
        worker = _Worker(slot, process, log)
        worker.reader = threading.Thread(target=self._read, args=(worker,), daemon=True)
        worker.reader.start()
        self.workers[slot] = worker
        self.started += 1
        return worker

    def _read(self, worker: _Worker) -> None:
        assert worker.process.stdout is not None
        for line in worker.process.stdout:
            self.events.put((worker, line))
        self.events.put((worker, None))

    def __repr__(self) -> str:
        return f"LocalExecutor(jobs={self.jobs}, threads={self.threads}, gpus={self.gpus})"
