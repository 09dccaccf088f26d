"""Failure paths end in one-line errors with nothing half-written or overwritten (issue 13, class 6)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import SafetensorError
from test_hub import cli, one_line_error, trained  # noqa: F401

from prunectl import engine, paths
from prunectl.core.hparams import ScheduleSpec
from prunectl.core.io import save_tensors, write_json
from prunectl.engine.zoo import pull_entry
from prunectl.errors import BadValueError, OutputError

ENOSPC = 'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })'


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*.tmp"))


def error_after_progress(result) -> str:
    """Exit 2; stderr holds the progress bar of the epochs that ran, then exactly one `error:` line, no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.output)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.rstrip().splitlines()[-1] == errors[0]
    return errors[0]


def test_a_full_disk_is_a_one_line_output_error_and_nothing_is_half_written(tmp_path, monkeypatch):
    def full_disk(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"\0" * 100)  # a partial write, then the error safetensors raises
        raise SafetensorError(ENOSPC)

    monkeypatch.setattr("prunectl.core.io.save_file", full_disk)
    with pytest.raises(OutputError, match="free some space"):
        save_tensors(tmp_path / "w.safetensors", {"a": torch.ones(2)})
    assert not (tmp_path / "w.safetensors").exists() and leftovers(tmp_path) == []
    out = tmp_path / "run"
    error = error_after_progress(cli("train", "-m", "lenet300100", "--epochs", "1", "--out", str(out)))
    assert "cannot write" in error and "free some space" in error
    assert not (out / paths.MODEL).exists() and not (out / paths.RESULT).exists() and leftovers(out) == []


def test_a_failed_train_does_not_block_the_corrected_command(tmp_path):
    out = tmp_path / "run"
    error = one_line_error(cli("train", "-m", "vgg16", "-d", "cifar10", "--epochs", "1", "--out", str(out),
                               "--data-dir", str(tmp_path / "nothing-here")))
    assert "cifar10" in error
    fixed = cli("train", "-m", "lenet300100", "--epochs", "1", "--out", str(out))
    assert fixed.exit_code == 0, fixed.output
    assert (out / paths.RESULT).is_file()


def test_a_trained_run_is_still_never_replaced(trained, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    shutil.copytree(trained.path, out)
    error = one_line_error(cli("train", "-m", "lenet5", "--epochs", "1", "--out", str(out)))
    assert "holds a different run" in error
    assert json.loads((out / paths.SPEC).read_text())["id"] == trained.id


@pytest.mark.parametrize(("args", "words"), [
    (["--lr", "inf"], "finite"),
    (["--weight-decay", "inf"], "finite"),
    (["--seed", str(2**64)], "2**64"),
    (["--seed", "-1"], "2**64"),
    (["--snapshot-epochs", "5"], "snapshot epochs"),
])
def test_bad_training_numbers_are_refused_up_front(tmp_path, args, words):
    out = tmp_path / "run"
    assert words in one_line_error(cli("train", "-m", "lenet300100", "--epochs", "2", "--out", str(out), *args))
    assert not (out / paths.CHECKPOINT).exists()


def test_the_largest_seed_torch_takes_is_accepted():
    spec = engine.baseline_spec("lenet300100", "mnist5k", epochs=1)
    assert spec.replace(seed=2**64 - 1).seed == 2**64 - 1
    with pytest.raises(BadValueError):
        spec.replace(seed=2**64)


def test_a_diverged_run_stops_at_the_first_non_finite_loss_and_keeps_its_checkpoint(tmp_path):
    spec = engine.baseline_spec("lenet300100", "mnist5k", epochs=3)
    # epoch 1 at a sane warmup lr, then 1e30: the loss becomes non-finite in epoch 2
    spec = spec.replace(optim=spec.optim.replace(lr=1e30),
                        schedule=ScheduleSpec(epochs=3, warmup_epochs=1, warmup_lr=0.01))
    out = tmp_path / "run"
    with pytest.raises(BadValueError) as err:
        engine.train(spec, out=out)
    assert "training diverged" in str(err.value) and "epoch 2" in str(err.value) and "\n" not in str(err.value)
    assert (out / paths.CHECKPOINT).is_file() and not (out / paths.RESULT).exists()
    from safetensors import safe_open

    with safe_open(str(out / paths.CHECKPOINT), "pt") as f:
        assert f.metadata()["epoch"] == "1"  # the last good epoch
    metrics = [json.loads(line) for line in (out / paths.METRICS).read_text().splitlines()]
    assert len(metrics) == 1 and all(np.isfinite(v) for v in metrics[0].values() if isinstance(v, float))


def test_json_is_written_strictly(tmp_path):
    with pytest.raises(BadValueError, match="non-finite"):
        write_json(tmp_path / "result.json", {"final_acc": float("nan")})
    assert not (tmp_path / "result.json").exists() and leftovers(tmp_path) == []


def test_an_empty_npz_test_split_is_one_line(tmp_path):
    x = np.zeros((10, 8, 8), np.uint8)
    np.savez(tmp_path / "d.npz", images=x, labels=np.arange(10) % 2, test_images=x[:0], test_labels=np.arange(0))
    error = one_line_error(cli("train", "-m", "lenet300100", "-d", f"npz:{tmp_path / 'd.npz'}", "--epochs", "1",
                               "--out", str(tmp_path / "run")))
    assert "test split is empty" in error


def test_extract_arch_never_overwrites_and_refuses_a_directory(trained, tmp_path):  # noqa: F811
    existing = tmp_path / "arch.json"
    existing.write_text("precious")
    assert "never overwritten" in one_line_error(cli("extract-arch", str(trained.path), "-o", str(existing)))
    assert existing.read_text() == "precious"
    folder = tmp_path / "folder"
    folder.mkdir()
    assert "is a directory" in one_line_error(cli("extract-arch", str(trained.path), "-o", str(folder)))
    assert list(folder.iterdir()) == []
    fresh = cli("extract-arch", str(trained.path), "-o", str(tmp_path / "new.json"))
    assert fresh.exit_code == 0 and json.loads((tmp_path / "new.json").read_text())["family"] == "mlp"


@pytest.mark.parametrize(("args", "words"), [
    (["--plot", "report.txt"], ".png or .svg"),
    (["--plot", "/no/such/dir/report.png"], "does not exist"),
    (["--gate", "scratch-B is better"], "malformed gate"),
    (["--metric", "median"], "unknown metric"),
])
def test_compare_checks_its_report_options_before_training_a_recipe(args, words):
    assert words in one_line_error(cli("compare", "quick", *args))
    assert not paths.runs_root().exists() or not any(paths.runs_root().iterdir())  # nothing was trained


def test_a_tampered_zoo_copy_is_not_reused(tmp_path):
    first = pull_entry("quick-smallcnn-baseline")
    again = cli("pull", "zoo:quick-smallcnn-baseline", "--json")
    assert again.exit_code == 0 and json.loads(again.stdout)["run"] == str(first.path)
    weights = first.file(paths.MODEL)
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # one flipped bit in the last weight: still a readable safetensors file
    weights.write_bytes(bytes(data))
    error = one_line_error(cli("pull", "zoo:quick-smallcnn-baseline"))
    assert "differs from the source" in error and paths.MODEL in error


def test_snapshot_epochs_within_the_run_are_accepted():
    spec = engine.baseline_spec("lenet300100", "mnist5k", epochs=2)
    assert spec.replace(snapshot_epochs=(1, 2)).snapshot_epochs == (1, 2)
