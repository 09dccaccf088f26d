"""The CLI end to end: `train` on the embedded data, `info`, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from prunectl import __version__, paths
from prunectl.cli.app import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0 and result.stdout.strip() == f"prunectl {__version__}"


def test_train_end_to_end_on_mnist5k(tmp_path):
    out = tmp_path / "baseline"
    result = invoke("train", "--model", "lenet5", "--dataset", "mnist5k", "--epochs", "2", "--seed", "1",
                    "--out", str(out), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["epochs"] == 2 and report["seed"] == 1 and report["run"] == str(out)
    assert report["final_acc"] > 80  # LeNet-5 gets well past chance within 2 epochs on MNIST
    spec = json.loads((out / paths.SPEC).read_text())
    assert spec["spec"]["schedule"]["epochs"] == 2 and spec["spec"]["seed"] == 1
    assert spec["spec"]["arch"]["name"] == "lenet5"
    assert len((out / paths.METRICS).read_text().splitlines()) == 2
    # The same command again reuses the finished run instead of training.
    again = invoke("train", "--model", "lenet5", "--dataset", "mnist5k", "--epochs", "2", "--seed", "1",
                   "--out", str(out), "--json")
    assert again.exit_code == 0 and json.loads(again.stdout)["wall_seconds"] == report["wall_seconds"]


def test_info_json_for_a_name_a_file_and_a_run(tmp_path):
    by_name = json.loads(invoke("info", "resnet56", "--dataset", "cifar10", "--json").stdout)
    assert isinstance(by_name["params"], int) and isinstance(by_name["flops"], int)
    assert by_name["params"] == 853018  # analytic_resnet56() in test_flops.py
    assert by_name["flops_unit"] == "FLOPs (multiply-adds)"
    assert by_name["layers"][0]["name"] and sum(r["flops"] for r in by_name["layers"]) == by_name["flops"]

    run = tmp_path / "run"
    assert invoke("train", "-m", "lenet300100", "--epochs", "1", "--out", str(run)).exit_code == 0
    by_run = json.loads(invoke("info", str(run), "--json").stdout)
    by_file = json.loads(invoke("info", str(run / paths.ARCH), "--json").stdout)
    assert by_run["params"] == by_file["params"] == 266610
    human = invoke("info", "vgg16", "-d", "cifar100")
    assert human.exit_code == 0 and "multiply-adds" in human.stdout and "features.0" in human.stdout


def _one_line_error(result, *needles: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0]
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    "args, needles",
    [
        (["train", "-m", "resnet5", "--epochs", "1"], ["unknown model 'resnet5'", "did you mean"]),
        (["train", "-m", "lenet5", "-d", "mnist5", "--epochs", "1"], ["unknown dataset 'mnist5'", "mnist5k"]),
        (["train", "-m", "lenet5", "--epochs", "0"], ["epochs must be >= 1"]),
        (["train", "-m", "lenet5", "--lr", "-0.1", "--epochs", "1"], ["learning rate must be > 0"]),
        (["train", "-m", "lenet5", "--batch-size", "0", "--epochs", "1"], ["batch size"]),
        (["train", "-m", "vgg16", "-d", "cifar10", "--epochs", "1"], ["cifar10", "--data-dir"]),
        (["train", "-m", "lenet5", "--epochs", "1", "--device", "cuda:7"], ["cuda"]),
        (["info", "vgg17"], ["unknown model 'vgg17'", "vgg16"]),
        (["train", "-m", "vgg16", "--model-option", "bogus=1", "--epochs", "1"], ["no option bogus", "head"]),
        (["train", "-m", "vgg16", "--model-option", "head", "--epochs", "1"], ["KEY=VALUE"]),
        (["info", "missing-arch.json"], ["no architecture file"]),
    ],
)
def test_user_mistakes_get_one_line_and_exit_2(args, needles):
    _one_line_error(invoke(*args), *needles)


def test_unwritable_or_foreign_output_is_refused_and_left_untouched(tmp_path):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    _one_line_error(invoke("train", "-m", "lenet5", "--epochs", "1", "--out", str(a_file)), "not a directory")
    _one_line_error(invoke("train", "-m", "lenet5", "--epochs", "1", "--out", str(a_file / "run")), "cannot create")
    foreign = tmp_path / "results"
    foreign.mkdir()
    (foreign / "paper.tex").write_text("draft")
    _one_line_error(invoke("train", "-m", "lenet5", "--epochs", "1", "--out", str(foreign)), "not a prunectl run")
    assert a_file.read_text() == "mine" and (foreign / "paper.tex").read_text() == "draft"
    assert sorted(p.name for p in foreign.iterdir()) == ["paper.tex"]


def test_debug_shows_the_traceback():
    result = invoke("--debug", "train", "-m", "resnet5", "--epochs", "1")
    assert result.exit_code != 0 and result.exception is not None
    assert type(result.exception).__name__ == "UnknownNameError"


def test_killed_cli_run_resumes_from_its_checkpoint(tmp_path):
    """A real SIGKILL of `python -m prunectl train`, then the same command finishes from the checkpoint."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "prunectl", "train", "-m", "lenet300100", "--epochs", "4", "--out", str(out),
           "--json"]
    env = {**os.environ, "PRUNECTL_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (out / paths.CHECKPOINT).exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    if (out / paths.RESULT).exists():
        pytest.skip("the run finished before it could be killed")
    first_epochs = len((out / paths.METRICS).read_text().splitlines())
    assert 1 <= first_epochs < 4
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["epochs"] == 4
    assert [json.loads(x)["epoch"] for x in (out / paths.METRICS).read_text().splitlines()] == [1, 2, 3, 4]
