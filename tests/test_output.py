"""Output off a terminal (CI, nohup, a file): one plain line per epoch and per stage; "reused" for a stored run;
and `--help` / `--version` answer without importing torch."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from types import SimpleNamespace

from typer.testing import CliRunner

from prunectl.cli.app import app
from prunectl.cli.output import FLOPS_LABEL, Output, epoch_line

runner = CliRunner()
EPOCH = re.compile(r"^train lenet5  epoch (\d)/3  loss \d+\.\d{4}  train \d+\.\d\d%  test \d+\.\d\d%  \d+\.\d s$")


def test_off_a_terminal_each_epoch_is_one_plain_line_and_a_stored_run_says_reused(tmp_path):
    args = ["train", "-m", "lenet5", "-d", "mnist5k", "--epochs", "3", "--out", str(tmp_path / "run")]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    lines = first.stderr.splitlines()
    epochs = [m.group(1) for line in lines if (m := EPOCH.match(line))]
    assert epochs == ["1", "2", "3"], first.stderr
    assert any(re.match(r"^train lenet5: done, 3 epochs, test \d+\.\d\d%, \d+\.\d s$", line) for line in lines)
    assert "\r" not in first.stderr and "\x1b[" not in first.stderr  # no bar redrawn in place, no colour codes
    assert "reused" not in first.stderr

    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert "train lenet5: reused (from the run store)" in again.stderr
    assert not any(EPOCH.match(line) for line in again.stderr.splitlines())


def test_json_mode_prints_no_progress(tmp_path):
    result = runner.invoke(app, ["train", "-m", "lenet5", "-d", "mnist5k", "--epochs", "1", "--json",
                                 "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "epoch" not in result.stderr


def test_a_board_closes_each_stage_when_the_next_begins(capsys):
    output = Output()
    assert not output.live  # pytest's stderr is not a terminal
    with output.progress_board() as board:
        assert board is not None
        cb = board("seed 0 baseline")
        cb(SimpleNamespace(epoch=1, epochs=1, batch=1, batches=2, metrics=None))
        cb(SimpleNamespace(epoch=1, epochs=1, batch=0, batches=0,
                           metrics={"train_loss": 0.5, "test_acc": 90.0, "wall_seconds": 1.25}))
        board("seed 0 fine-tune")  # came from the store: no events
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "seed 0 baseline  epoch 1/1  loss 0.5000  test 90.00%  1.2 s"
    assert err[1].startswith("seed 0 baseline: done, 1 epochs, test 90.00%, ")
    assert err[2] == "seed 0 fine-tune: reused (from the run store)"
    assert len(err) == 3


def test_epoch_line_names_run_epoch_loss_accuracy_and_elapsed():
    event = SimpleNamespace(epoch=2, epochs=8, metrics={"train_loss": 0.25, "train_acc": 91.5, "test_acc": 90.25,
                                                        "wall_seconds": 12.34})
    assert epoch_line("seed 1 scratch-B", event) == \
        "seed 1 scratch-B  epoch 2/8  loss 0.2500  train 91.50%  test 90.25%  12.3 s"


def test_version_and_help_do_not_import_torch():
    code = ("import sys\nfrom prunectl.cli.app import app\n"
            "for args in (['--version'], ['--help'], ['prune', '--help'], ['compare', '--help']):\n"
            "    try:\n        app(args)\n    except SystemExit:\n        pass\n"
            "print('torch' in sys.modules, 'numpy' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False False"


def test_the_cli_flops_label_is_the_counters():
    from prunectl.core.flops import FLOPS_LABEL as counted

    assert counted == FLOPS_LABEL


def prunectl_help(*args: str) -> str:
    """`prunectl ARGS --help` as the installed command prints it (main(), not a test runner's copy of the app)."""
    done = subprocess.run([sys.executable, "-m", "prunectl", *args, "--help"], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "COLUMNS": "150"})
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_help_has_readable_metavars_and_shell_completion():
    for args in ((), ("prune",), ("compare",), ("train",), ("zoo", "list")):
        text = prunectl_help(*args)
        for ugly in ("<bool>", "<str>", "<int>", "<float>", "<list[str]>", "{run}", "{RUN}"):
            assert ugly not in text, (args, ugly)
    assert "--install-completion" in prunectl_help()
    prune = prunectl_help("prune")
    assert "prunectl prune [OPTIONS] RUN" in prune and "NUMBER" in prune


def test_help_states_the_protocols_real_defaults():
    from prunectl.cli.options import PROTOCOL_DEFAULTS
    from prunectl.engine.protocols import PROTOCOLS

    table = {name: {"epochs": p.schedule.epochs, "lr": p.optim.lr, "batch_size": p.optim.batch_size,
                    "finetune_epochs": p.finetune_epochs, "finetune_lr": p.finetune_lr} for name, p in PROTOCOLS.items()}
    assert table == PROTOCOL_DEFAULTS
    text = " ".join(prunectl_help("finetune").replace("│", " ").split())
    assert "fine-tune lr: quick 0.01, cifar 0.001, imagenet 0.001" in text
    assert "default 0.001" not in text


def test_hub_retry_warnings_become_part_of_the_one_line_error(capsys):
    import logging

    import httpx2
    import pytest

    from prunectl.core.hub import hub_errors, parse_ref
    from prunectl.errors import HubError

    with pytest.raises(HubError) as caught, hub_errors(parse_ref("hf:me/net"), "pull"):
        for n in (1, 2):
            logging.getLogger("huggingface_hub.utils._http").warning(f"Retrying in 1s [Retry {n}/5].")
        raise httpx2.ConnectError("connection refused")
    assert str(caught.value).endswith("(after 2 retries)") and "cannot reach the Hub" in str(caught.value)
    err = capsys.readouterr().err
    assert "Retrying" not in err
