"""kill -9 in the middle of training with a training-time method (SFP's masks, SSS's scales and their proximal
state), then the same command again: the run resumes from its checkpoint and ends bit-identical to an
uninterrupted run, so the method's state really is part of the checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from prunectl import paths

EPOCHS = 3


def command(out: Path, method: str, setting: str) -> list[str]:
    return [sys.executable, "-m", "prunectl", "train", "-m", "resnet8", "-d", "mnist5k", "--method", method,
            "--set", setting, "--epochs", str(EPOCHS), "--out", str(out), "--json"]


def environment(home: Path) -> dict[str, str]:
    # One thread in every process: the same float reductions in the killed, resumed and reference runs.
    return {**os.environ, "PRUNECTL_HOME": str(home), "PRUNECTL_THREADS": "1"}


@pytest.mark.parametrize(("method", "setting"), [("sfp", "rate=0.7"), ("sss", "gamma=0.15")])
def test_a_run_killed_mid_training_resumes_to_the_uninterrupted_weights(tmp_path, method, setting):
    out = tmp_path / "killed"
    cmd, env = command(out, method, setting), environment(tmp_path / "home")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (out / paths.CHECKPOINT).exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.kill()  # SIGKILL: nothing of the process's memory survives, only what it wrote
    proc.wait()
    if (out / paths.RESULT).exists():
        pytest.skip("the run finished before it could be killed")
    assert 1 <= len((out / paths.METRICS).read_text().splitlines()) < EPOCHS
    resumed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert [json.loads(x)["epoch"] for x in (out / paths.METRICS).read_text().splitlines()] == [1, 2, 3]

    reference = tmp_path / "straight"
    straight = subprocess.run(command(reference, method, setting), env=environment(tmp_path / "other-home"),
                              capture_output=True, text=True, timeout=300)
    assert straight.returncode == 0, straight.stderr
    assert (out / paths.MODEL).read_bytes() == (reference / paths.MODEL).read_bytes()
