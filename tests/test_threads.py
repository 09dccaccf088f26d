"""Thread control: --threads > $PRUNECTL_THREADS > $OMP_NUM_THREADS > a share of the cores; recorded, not hashed."""

from __future__ import annotations

import fcntl
import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from prunectl.cli.app import app
from prunectl.core import threads
from prunectl.errors import BadValueError
from prunectl.training.trainer import Trainer

runner = CliRunner()


@pytest.fixture(autouse=True)
def restore_threads(monkeypatch):
    """The suite runs on one thread (conftest); every test here gets it back however it ends."""
    monkeypatch.delenv(threads.THREADS_ENV, raising=False)
    monkeypatch.delenv(threads.OMP_ENV, raising=False)
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_data(tmp_path):
    """40 8×8 images: training takes milliseconds, so the tests measure thread control, not training."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "tiny.npz", images=rng.integers(0, 256, (40, 8, 8), dtype=np.uint8), labels=np.arange(40) % 2)
    return f"npz:{tmp_path / 'tiny.npz'}"


def train(data: str, *args: str) -> dict:
    result = runner.invoke(app, ["train", "-m", "lenet300100", "-d", data, "--epochs", "1", "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_threads_1_runs_single_threaded_and_is_recorded_but_not_hashed(monkeypatch, tiny_data):
    seen: list[int] = []
    fit = Trainer.fit

    def watched_fit(self):
        seen.append(torch.get_num_threads())  # what torch uses while the run trains
        return fit(self)

    monkeypatch.setattr(Trainer, "fit", watched_fit)
    torch.set_num_threads(2)
    single = train(tiny_data, "--threads", "1")
    assert seen == [1] and single["threads"] == 1 and torch.get_num_threads() == 1
    assert json.loads((Path(single["run"]) / "result.json").read_text())["threads"] == 1

    two = train(tiny_data, "--threads", "2", "--seed", "1")
    assert seen == [1, 2] and two["threads"] == 2
    again = train(tiny_data, "--threads", "2")  # same spec, other thread count: the stored run, not a new one
    assert again["id"] == single["id"] and again["threads"] == 1 and seen == [1, 2]


def test_the_environment_sets_threads_when_the_option_does_not(monkeypatch, tiny_data):
    monkeypatch.setenv(threads.THREADS_ENV, "2")
    monkeypatch.setenv(threads.OMP_ENV, "1")
    assert train(tiny_data)["threads"] == 2
    assert train(tiny_data, "--threads", "1", "--seed", "1")["threads"] == 1


def test_precedence_option_then_prunectl_threads_then_omp_then_default():
    env = {threads.THREADS_ENV: "3", threads.OMP_ENV: "5,2"}
    assert threads.resolve_threads("2", env, default=7) == (2, "--threads")
    assert threads.resolve_threads(None, env, default=7) == (3, threads.THREADS_ENV)
    assert threads.resolve_threads(None, {threads.OMP_ENV: "5,2"}, default=7) == (5, threads.OMP_ENV)
    assert threads.resolve_threads(None, {threads.THREADS_ENV: " ", threads.OMP_ENV: ""}, default=7) == (7, "default")


@pytest.mark.parametrize("value", ["0", "-1", "x", "1.5"])
def test_a_bad_thread_count_is_one_line_exit_2(value, monkeypatch):
    for args in (["--threads", value], [f"--threads={value}"]):
        result = runner.invoke(app, ["train", "-m", "lenet300100", "--epochs", "1", *args])
        assert result.exit_code == 2, result.output
        assert result.stderr.strip().splitlines() == [f"error: --threads must be a whole number of threads >= 1, "
                                                      f"got {value if value != 'x' and value != '1.5' else repr(value)}"]
    monkeypatch.setenv(threads.THREADS_ENV, value)
    result = runner.invoke(app, ["info", "lenet300100"])
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert threads.THREADS_ENV in result.stderr
    with pytest.raises(BadValueError, match=threads.OMP_ENV):
        threads.resolve_threads(None, {threads.OMP_ENV: value})


def test_apply_threads_sets_torch_and_registers_this_process():
    torch.set_num_threads(2)
    assert threads.apply_threads("1") == (1, "--threads")
    assert torch.get_num_threads() == 1
    own = threads.procs_dir() / f"{socket.gethostname()}-{os.getpid()}.lock"
    assert own.is_file() and threads.count_other_processes() == 0  # itself never counts


def test_the_default_shares_the_cores_among_running_prunectl_processes():
    procs, host = threads.procs_dir(), socket.gethostname()
    procs.mkdir(parents=True)
    alive = os.open(procs / f"{host}-999991.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(alive, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another process, as far as the count can tell
    (procs / f"{host}-999992.lock").touch()
    os.utime(procs / f"{host}-999992.lock", (1, 1))  # unlocked and old: its process has ended
    (procs / f"{host}-999993.lock").touch()  # unlocked but fresh: maybe being created; not counted, not removed
    elsewhere = os.open(procs / "other-node-999994.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(elsewhere, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a process on another host sharing the home
    try:
        assert threads.count_other_processes() == 1
        assert not (procs / f"{host}-999992.lock").exists() and (procs / f"{host}-999993.lock").exists()
        assert threads.default_threads(cores=4, torch_default=8) == 2
        assert threads.default_threads(cores=16, torch_default=8) == 4
        assert threads.resolve_threads(None, {}) == (max(1, min(threads.available_cores(),
                                                                threads._initial_torch_threads()) // 2), "default")
    finally:
        os.close(alive)
        os.close(elsewhere)
    assert threads.count_other_processes() == 0  # its lock gone with it
    assert threads.default_threads(cores=1, torch_default=4, others=3) == 1


def test_every_computing_command_takes_threads():
    for command in ("train", "prune", "finetune", "scratch", "lottery", "compare", "info"):
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0 and "--threads" in result.output, command
