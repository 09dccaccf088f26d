"""One run on two processes (torchrun, gloo on CPU): identical replicas, the one-process result at the same
global batch, rank 0 alone writing, exact resume after kill -9 of the whole job, and the batch/world error.

Each job is a real `python -m torch.distributed.run --standalone --nproc-per-node 2` launch (a free port per
job) of LeNet-5 (no BatchNorm, so the shards' batch statistics cannot differ) on mnist5k, one thread per rank.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from prunectl import paths
from prunectl.core.io import load_tensors
from prunectl.methods.slimming import SparsityPenalty
from prunectl.training import distributed

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("ddp_worker.py")
JOB_TIMEOUT = 240  # seconds per launch: 2 ranks share 2 cores with other work
# lr 0.01: at lr 0.1 this tiny net is chaotic enough that float noise grows to O(1) within two epochs, which
# would test the dynamics, not the implementation. Two epochs of 63 steps at global batch 64.
TRAIN = ["train", "-m", "lenet5", "--epochs", "2", "--lr", "0.01", "--batch-size", "64", "--threads", "1",
         "--device", "cpu", "--json"]
# Two ranks against one process at the same global batch: the union of the ranks' shards is exactly the
# one-process batch (same images, same crops), so only the order of float sums differs (observed max |Δw| 3e-8).
ONE_PROCESS_ATOL = 1e-6


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(PYTHONPATH=str(ROOT), PRUNECTL_HOME=str(home / "home"), PRUNECTL_DATA_DIR=str(home / "data"),
               HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    return env


def _torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *args]


def _launch(home: Path, digests: Path, out: Path, *, rank_out: bool = False) -> subprocess.Popen:
    digests.mkdir(parents=True, exist_ok=True)
    extra = ["--rank-out"] if rank_out else []
    return subprocess.Popen(_torchrun(str(WORKER), str(digests), *extra, *TRAIN, "--out", str(out)),
                            env=_env(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own process group: kill -9 reaches every rank


def _finish(job: subprocess.Popen) -> str:
    try:
        stdout, stderr = job.communicate(timeout=JOB_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(job.pid, signal.SIGKILL)
        raise
    assert job.returncode == 0, stderr[-3000:]
    return stdout


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """An uninterrupted two-process run; rank 1 is pointed at its own --out to show it writes nothing."""
    home = tmp_path_factory.mktemp("ddp")
    out = home / "run"
    stdout = _finish(_launch(home, home / "digests", out, rank_out=True))
    return {"home": home, "out": out, "digests": home / "digests", "stdout": stdout}


def test_ranks_hold_identical_parameters_and_buffers(straight):
    digests = [(straight["digests"] / f"rank{r}.txt").read_text() for r in (0, 1)]
    assert digests[0] == digests[1]


def test_only_rank_0_writes(straight):
    out = straight["out"]
    assert (out / paths.RESULT).is_file() and (out / paths.MODEL).is_file()
    assert not (out / paths.CHECKPOINT).exists()
    assert not Path(f"{out}.rank1").exists()  # rank 1 never created, let alone wrote, its run directory
    result = json.loads(straight["stdout"])  # rank 0's JSON alone on stdout
    assert result["epochs"] == 2 and result["run"] == str(out) and result["processes"] == 2


def test_matches_one_process_at_the_same_global_batch(straight, tmp_path):
    single = tmp_path / "single"
    done = subprocess.run([sys.executable, "-m", "prunectl", *TRAIN, "--out", str(single)],
                          env=_env(straight["home"]), capture_output=True, text=True, timeout=JOB_TIMEOUT)
    assert done.returncode == 0, done.stderr[-3000:]
    one = json.loads((single / paths.SPEC).read_text())
    two = json.loads((straight["out"] / paths.SPEC).read_text())
    assert one["id"] == two["id"]  # the spec (and run id) does not depend on the number of processes
    a, b = load_tensors(single / paths.MODEL), load_tensors(straight["out"] / paths.MODEL)
    assert a.keys() == b.keys()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst <= ONE_PROCESS_ATOL, worst
    assert any(not torch.equal(a[k], b[k]) for k in a) or worst == 0.0


def test_kill_9_of_the_whole_job_then_rerun_gives_the_uninterrupted_weights(straight, tmp_path):
    out = tmp_path / "run"
    job = _launch(straight["home"], tmp_path / "digests", out)
    deadline = time.monotonic() + JOB_TIMEOUT
    while not (out / paths.CHECKPOINT).exists():  # killed once epoch 1 is checkpointed, inside epoch 2
        assert job.poll() is None, job.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    os.killpg(job.pid, signal.SIGKILL)
    job.wait(timeout=30)
    assert not (out / paths.RESULT).exists(), "the job finished before it could be killed"
    _finish(_launch(straight["home"], tmp_path / "digests", out))
    resumed, uninterrupted = load_tensors(out / paths.MODEL), load_tensors(straight["out"] / paths.MODEL)
    assert resumed.keys() == uninterrupted.keys()
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in resumed)
    history = [json.loads(line) for line in (out / paths.METRICS).read_text().splitlines()]
    assert [m["epoch"] for m in history] == [1, 2]


def test_a_world_size_that_does_not_divide_the_batch_is_a_one_line_error(tmp_path):
    out = tmp_path / "run"
    done = subprocess.run(_torchrun("-m", "prunectl", *TRAIN[:-1], "--batch-size", "63", "--out", str(out)),
                          env=_env(tmp_path), capture_output=True, text=True, timeout=JOB_TIMEOUT)
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if "does not divide" in line]
    assert lines and "global batch size 63 does not divide over 2 processes" in lines[0]
    assert len(lines) == 2  # each rank prints one line; the only traceback is torchrun's own report
    assert str(ROOT / "prunectl") not in done.stderr
    assert not out.exists()


def test_sync_batchnorm_conversion_keeps_tensors_and_the_slimming_penalty(tmp_path):
    # SyncBN only runs on CUDA, but converting and reverting is plain module surgery, checked here on CPU.
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Sequential(nn.BatchNorm1d(4)))
    weights = {name: p for name, p in model.named_parameters()}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    distributed.to_sync_batchnorm(model)
    assert isinstance(model[1], nn.SyncBatchNorm) and isinstance(model[2][0], nn.SyncBatchNorm)
    assert all(p is weights[name] for name, p in model.named_parameters())  # optimiser groups stay valid
    model[1].weight.grad = torch.zeros(4)
    SparsityPenalty(0.5).after_backward(model)  # Slimming's penalty matches _BatchNorm, SyncBN included
    assert torch.equal(model[1].weight.grad, 0.5 * torch.sign(model[1].weight.detach()))
    distributed.revert_sync_batchnorm(model)
    assert type(model[1]) is nn.BatchNorm2d and type(model[2][0]) is nn.BatchNorm1d
    assert all(p is weights[name] for name, p in model.named_parameters())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_batch_check_and_torchrun_environment(monkeypatch):
    assert distributed.check_batch(64, distributed.World(0, 2)) == 32
    with pytest.raises(Exception, match="does not divide over 3 processes"):
        distributed.check_batch(64, distributed.World(0, 3))
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert distributed.world_from_env() == distributed.World(2, 4, 0)
    assert distributed.rank_device(distributed.World(1, 2, 1), "cpu") == "cpu"
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(Exception, match="bad torchrun environment"):
        distributed.world_from_env()
