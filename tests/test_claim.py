"""Claiming a run: one holder at a time, stale locks broken (dead pid here, same Slurm job, no heartbeat), and two
processes executing the same run at once train it once."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

from tinyrecipe import prunectl

from prunectl import paths
from prunectl.engine import baseline_spec
from prunectl.runs import claim
from prunectl.runs.store import prepare_run


def write_lock(run_dir, **holder):
    record = {"host": socket.gethostname(), "pid": os.getpid(), "started": None, "slurm_job": None,
              "time": time.time(), "token": "t" * 16, **holder}
    (run_dir / paths.LOCK).write_text(json.dumps(record))


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_one_holder_at_a_time_and_release_frees_it(tmp_path):
    record = claim.try_claim(tmp_path)
    assert record is not None and claim.read_lock(tmp_path)["token"] == record["token"]
    assert claim.try_claim(tmp_path) is None  # held by a live process (this one)
    claim.release(tmp_path, record)
    assert claim.read_lock(tmp_path) is None
    assert claim.try_claim(tmp_path) is not None


def test_release_leaves_someone_elses_lock(tmp_path):
    write_lock(tmp_path, token="other-holder")
    claim.release(tmp_path, {"token": "mine"})
    assert claim.read_lock(tmp_path)["token"] == "other-holder"


def test_a_dead_holder_on_this_host_is_broken(tmp_path):
    write_lock(tmp_path, pid=dead_pid())
    record = claim.try_claim(tmp_path)
    assert record is not None and record["pid"] == os.getpid()
    assert not list(tmp_path.glob("run.lock.stale-*"))  # the broken lock was removed, not left behind


def test_a_reused_pid_is_not_the_holder(tmp_path):
    write_lock(tmp_path, pid=os.getpid(), started="1")  # our pid, but a process that started at another time
    assert claim.try_claim(tmp_path) is not None


def test_another_hosts_lock_holds_until_its_heartbeat_stops(tmp_path):
    write_lock(tmp_path, host="elsewhere", pid=1)
    assert claim.try_claim(tmp_path) is None
    old = time.time() - claim.STALE_AFTER - 5
    os.utime(tmp_path / paths.LOCK, (old, old))
    assert claim.try_claim(tmp_path) is not None


def test_a_requeued_slurm_job_takes_its_own_old_lock(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    write_lock(tmp_path, host="another-node", pid=1, slurm_job="4242")
    assert claim.try_claim(tmp_path) is not None
    write_lock(tmp_path, host="another-node", pid=1, slurm_job="999")
    assert claim.try_claim(tmp_path) is None


def test_holding_records_the_attempt_and_releases(tmp_path):
    record = claim.try_claim(tmp_path)
    with claim.holding(tmp_path, record):
        assert claim.read_lock(tmp_path) is not None
    assert claim.read_lock(tmp_path) is None
    (attempt,) = claim.attempts(tmp_path)
    assert attempt["pid"] == os.getpid() and "token" not in attempt


def test_two_processes_running_one_run_train_it_once(tmp_path):
    spec = baseline_spec("smallcnn", "mnist5k", epochs=3)
    run = prepare_run(spec, spec.stage)
    first, second = prunectl("run", run.id, "--threads", "1"), prunectl("run", str(run.path), "--threads", "1")
    outputs = [p.communicate(timeout=300) for p in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, outputs
    assert run.is_done() and len(claim.attempts(run.path)) == 1  # one of them trained, the other waited
    assert sum("another process is running it" in err for _, err in outputs) == 1
    assert not (run.path / paths.LOCK).exists()
