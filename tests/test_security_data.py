"""A data directory is not trusted: planted CIFAR pickles never run code, and legit batches still load (issue 13)."""

from __future__ import annotations

import builtins
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from datafiles import dump, write_cifar10, write_cifar100
from typer.testing import CliRunner

from prunectl.cli.app import app
from prunectl.data import load_dataset
from prunectl.data.cifar_batches import RestrictedUnpickler
from prunectl.errors import DataUnavailableError


class _Gadget:
    """Unpickling this calls `func(*args)`: the classic pickle code-execution payload."""

    def __init__(self, func, *args) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def gadgets(marker: Path) -> dict[str, object]:
    return {
        "os.system": _Gadget(os.system, f"touch {marker}"),
        "builtins.exec": _Gadget(builtins.exec, f"open({str(marker)!r}, 'w').write('ran')"),
        "pathlib.touch": _Gadget(Path.touch, marker),
        "numpy.load": _Gadget(np.save, str(marker), np.zeros(1)),  # a numpy global that is not an array builder
    }


def plant(path: Path, payload: object, legit: dict | None = None) -> None:
    """A batch that looks like CIFAR's (data, labels) with the payload inside it."""
    batch = dict(legit or {"data": np.zeros((2, 3072), np.uint8), "labels": [0, 1]})
    batch["batch_label"] = payload
    dump(path, batch)


@pytest.mark.parametrize("gadget", ["os.system", "builtins.exec", "pathlib.touch", "numpy.load"])
@pytest.mark.parametrize("name", ["data_batch_1", "test_batch"])
def test_a_planted_cifar10_batch_is_refused_and_never_runs(tmp_path, gadget, name):
    write_cifar10(tmp_path)
    marker = tmp_path / "MARKER"
    plant(tmp_path / "cifar-10-batches-py" / name, gadgets(marker)[gadget])
    with pytest.raises(DataUnavailableError) as err:
        load_dataset("cifar10", data_dir=tmp_path)
    message = str(err.value)
    assert "\n" not in message and name in message and "not a CIFAR batch" in message
    assert not list(tmp_path.glob("MARKER*"))


def test_the_payload_is_real(tmp_path):
    """The same file, read by plain pickle, does run the code: the test above guards against a real attack."""
    marker = tmp_path / "MARKER"
    plant(tmp_path / "batch", gadgets(marker)["pathlib.touch"])
    pickle.loads((tmp_path / "batch").read_bytes())
    assert marker.exists()


def test_a_planted_cifar100_file_is_refused(tmp_path):
    write_cifar100(tmp_path)
    marker = tmp_path / "MARKER"
    plant(tmp_path / "cifar-100-python" / "train", gadgets(marker)["os.system"],
          {"data": np.zeros((2, 3072), np.uint8), "fine_labels": [0, 1]})
    with pytest.raises(DataUnavailableError, match="cifar-100-python/train"):
        load_dataset("cifar100", data_dir=tmp_path)
    assert not marker.exists()


def test_train_on_a_planted_data_dir_is_one_line_and_runs_nothing(tmp_path):
    write_cifar10(tmp_path / "data")
    marker = tmp_path / "MARKER"
    plant(tmp_path / "data" / "cifar-10-batches-py" / "data_batch_3", gadgets(marker)["os.system"])
    result = CliRunner().invoke(app, ["train", "-m", "vgg16", "-d", "cifar10", "--data-dir", str(tmp_path / "data"),
                                      "--epochs", "1", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "data_batch_3" in lines[0], result.stderr
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_legit_batches_load_at_every_pickle_protocol(tmp_path, protocol):
    x = np.random.default_rng(0).integers(0, 256, (3, 3072), dtype=np.uint8)
    blob = pickle.dumps({"data": x, "labels": [1, 2, 3], "filenames": ["a", "b", "c"], b"bytes_key": b"v"},
                        protocol=protocol)
    import io

    loaded = RestrictedUnpickler(io.BytesIO(blob), encoding="latin1").load()
    assert np.array_equal(loaded["data"], x) and loaded["labels"] == [1, 2, 3]


def test_legit_fixture_still_loads_bit_identically(tmp_path):
    written = write_cifar10(tmp_path)
    ds = load_dataset("cifar10", data_dir=tmp_path)
    images, labels = ds.tensors("train")
    assert np.array_equal(images.numpy(), written["x"]) and np.array_equal(labels.numpy(), written["y"])
