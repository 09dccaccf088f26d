"""Executors: the local one gives the serial results bit for bit; a killed worker fails only its run, which
resumes on the next compare; two compares on one store train nothing twice; `--executor slurm` where it
cannot work is a one-line error."""

from __future__ import annotations

import json
import os
import signal
import stat
import sys
import time
import types

import pytest
from tinyrecipe import prunectl, write_recipe
from typer.testing import CliRunner

from prunectl import paths
from prunectl.cli.app import app
from prunectl.engine import baseline_spec, load_recipe, run_recipe, train
from prunectl.engine.executors import LocalExecutor
from prunectl.errors import EXIT_RUNS_FAILED, EXIT_USER_ERROR
from prunectl.runs import claim

runner = CliRunner()


def store_files(home, name):
    """{run directory name: bytes of `name`} for every run of a store."""
    return {p.parent.name: p.read_bytes() for p in sorted((home / "runs").glob(f"*/{name}"))}


def test_local_jobs_2_gives_the_serial_ids_and_bit_identical_weights(tmp_path, monkeypatch):
    recipe = load_recipe(write_recipe(tmp_path / "tiny.toml"))
    monkeypatch.setenv("PRUNECTL_HOME", str(tmp_path / "serial"))
    serial = run_recipe(recipe)
    monkeypatch.setenv("PRUNECTL_HOME", str(tmp_path / "local"))
    executor = LocalExecutor(2, threads=1)  # the suite runs serial runs on one thread too (conftest)
    local = run_recipe(recipe, executor=executor)
    assert [r.id for r in local.arms] == [r.id for r in serial.arms]
    assert [r.id for r in local.baselines + local.pruned] == [r.id for r in serial.baselines + serial.pruned]
    weights = store_files(tmp_path / "local", paths.MODEL)
    assert len(weights) == 8 and weights == store_files(tmp_path / "serial", paths.MODEL)
    assert executor.started == 2 and executor.executed == 8
    for run in local.arms:
        assert len(claim.attempts(run.path)) == 1 and "done" in run.file(paths.RUN_LOG).read_text()
    run_recipe(recipe, executor=executor)  # everything from the store: no worker started, no run handed out
    assert executor.started == 2 and executor.executed == 8


def wait_for(condition, timeout=240.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_killed_worker_fails_its_run_only_and_the_next_compare_resumes_it(tmp_path, monkeypatch):
    recipe_file = write_recipe(tmp_path / "tiny.toml", epochs=4, arms=("fine-tuned",))
    recipe = load_recipe(recipe_file)
    home = tmp_path / "home"
    base = baseline_spec(recipe.model, recipe.dataset, seed=0, epochs=4)
    victim = home / "runs" / f"train-{base.spec_hash()}"
    first = prunectl("compare", str(recipe_file), "--executor", "local", "--jobs", "2", "--threads", "1", "--json")
    # Kill the worker of seed 0's baseline once it has checkpointed an epoch (mid-run).
    wait_for(lambda: (victim / paths.CHECKPOINT).is_file() and (victim / paths.LOCK).is_file())
    os.kill(int(claim.read_lock(victim)["pid"]), signal.SIGKILL)
    out, err = first.communicate(timeout=300)
    assert first.returncode == EXIT_RUNS_FAILED, err
    message = err.strip().splitlines()[-1]
    assert message.startswith("error: 1 run(s) of the baselines wave did not finish")
    assert victim.name in message and str(victim / paths.RUN_LOG) in message and "signal 9" in message
    assert not (victim / paths.RESULT).exists() and (victim / paths.CHECKPOINT).is_file()
    (other,) = [p for p in (home / "runs").glob("train-*") if p != victim]
    assert (other / paths.RESULT).is_file() and len(claim.attempts(other)) == 1  # the other run went on

    second = prunectl("compare", str(recipe_file), "--executor", "local", "--jobs", "2", "--threads", "1", "--json")
    out, err = second.communicate(timeout=300)
    assert second.returncode == 0, err
    assert [g["arm"] for g in json.loads(out)["groups"]] == ["baseline", "fine-tuned"]
    assert len(claim.attempts(victim)) == 2  # resumed once, from its checkpoint
    assert len(json.loads((victim / paths.RESULT).read_text())) > 0
    log = (victim / paths.RUN_LOG).read_text()
    assert log.count("local worker") == 2
    # Resumed from the checkpoint, it ends where an uninterrupted run ends, bit for bit.
    monkeypatch.setenv("PRUNECTL_HOME", str(tmp_path / "reference"))
    reference = train(base)
    assert (victim / paths.MODEL).read_bytes() == reference.file(paths.MODEL).read_bytes()


def test_two_compares_on_one_store_train_every_run_once(tmp_path):
    recipe_file = write_recipe(tmp_path / "tiny.toml", seeds=(0,), epochs=2)
    local = prunectl("compare", str(recipe_file), "--executor", "local", "--jobs", "2", "--threads", "1", "--json")
    serial = prunectl("compare", str(recipe_file), "--json")
    (out_local, err_local), (out_serial, err_serial) = local.communicate(timeout=300), serial.communicate(timeout=300)
    assert local.returncode == 0 and serial.returncode == 0, (err_local, err_serial)
    assert json.loads(out_local)["groups"] == json.loads(out_serial)["groups"]
    runs = sorted((tmp_path / "home" / "runs").iterdir())
    assert len(runs) == 4
    for run in runs:
        assert len(claim.attempts(run)) == 1, run  # nobody trained a run the other had claimed
        assert not (run / paths.LOCK).exists() and not list(run.glob(".*.tmp"))
        json.loads((run / paths.RESULT).read_text())


def cli(*args):
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_run_by_id_and_its_errors(tmp_path):
    code, _, err = cli("run", "0123456789ab")
    assert code == EXIT_USER_ERROR and err.count("\n") == 1 and "no run 0123456789ab in the run store" in err
    code, _, err = cli("run", str(tmp_path))
    assert code == EXIT_USER_ERROR and "is not a prunectl run" in err
    spec = baseline_spec("smallcnn", "mnist5k", epochs=1)
    run = train(spec)
    code, out, _ = cli("run", run.id, "--json")  # done already: served from the store
    assert code == 0 and json.loads(out)["id"] == run.id
    code, _, err = cli("run", run.id, "--threads", "0")
    assert code == EXIT_USER_ERROR and "--threads must be at least 1" in err


def test_bad_executor_options_are_one_line_errors(tmp_path):
    recipe = str(write_recipe(tmp_path / "tiny.toml"))
    for args, words in ((["--executor", "ray"], "unknown executor 'ray'"),
                        (["--executor", "local", "--jobs", "0"], "--jobs must be at least 1")):
        code, _, err = cli("compare", recipe, *args)
        assert code == EXIT_USER_ERROR and err.count("\n") == 1 and words in err, err
    assert not (tmp_path / "home" / "runs").exists()  # nothing ran, nothing was written


def test_slurm_without_submitit_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit now raises ImportError
    code, _, err = cli("compare", str(write_recipe(tmp_path / "tiny.toml")), "--executor", "slurm")
    assert code == EXIT_USER_ERROR and err.count("\n") == 1
    assert "submitit" in err and "prunectl[slurm]" in err


def fake_command(folder, name, script):
    path = folder / name
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


@pytest.mark.parametrize("with_sbatch", [False, True])
def test_slurm_without_a_reachable_cluster_says_what_is_missing(tmp_path, monkeypatch, with_sbatch):
    monkeypatch.setitem(sys.modules, "submitit", types.ModuleType("submitit"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if with_sbatch:  # client tools present, controller down
        fake_command(bin_dir, "sbatch", "exit 0")
        fake_command(bin_dir, "scontrol", "echo 'Slurmctld(primary) at head is DOWN'; exit 1")
    monkeypatch.setenv("PATH", str(bin_dir))
    code, _, err = cli("compare", str(write_recipe(tmp_path / "tiny.toml")), "--executor", "slurm")
    assert code == EXIT_USER_ERROR and err.count("\n") == 1 and "Slurm is not reachable" in err
    assert ("is DOWN" in err) if with_sbatch else ("no sbatch on PATH" in err)
