"""A run is reused only if its data is the same data: canonical dataset names, content fingerprints, their cache."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from datafiles import write_folder
from typer.testing import CliRunner

from prunectl import engine
from prunectl.cli.app import app
from prunectl.core.hparams import TrainSpec
from prunectl.data import canonical_dataset, fingerprint, verify_dataset
from prunectl.engine.compare import report
from prunectl.errors import ArtifactError, BadValueError, DataUnavailableError
from prunectl.models import default_arch

runner = CliRunner()
OLD = 1_600_000_000 * 10**9  # an mtime well outside the racy window, in ns


def write_npz(path: Path, seed: int) -> Path:
    """60 8×8 greyscale images of 3 classes; the same seed gives the same bytes, another seed the same size."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, images=rng.integers(0, 256, (60, 8, 8), dtype=np.uint8), labels=np.arange(60) % 3)
    return path


def train_cli(*args: str) -> dict:
    result = runner.invoke(app, ["train", "-m", "lenet300100", "--epochs", "1", "--batch-size", "16", "--json",
                                 *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


# ---------- canonical names ----------


def test_relative_absolute_and_data_dir_names_of_one_file_are_one_dataset(tmp_path, monkeypatch):
    path = write_npz(tmp_path / "work" / "x.npz", seed=0)
    monkeypatch.chdir(tmp_path / "work")
    canonical, digest = canonical_dataset("npz:x.npz?pad=02&flip=1&pad=3")
    assert canonical == f"npz:{path.resolve()}?flip=1&pad=3"  # absolute, keys sorted, last repeat wins, ints plain
    assert digest is not None and digest.startswith("sha256:") and len(digest) == 7 + 64
    assert canonical_dataset(f"npz:{path}?pad=3&flip=1") == (canonical, digest)
    (tmp_path / "work" / "sub").mkdir()
    assert canonical_dataset("npz:./sub/../x.npz?flip=1&pad=3") == (canonical, digest)
    monkeypatch.chdir(tmp_path)
    assert canonical_dataset("npz:x.npz?flip=1&pad=3", data_dir=tmp_path / "work") == (canonical, digest)
    assert canonical_dataset(canonical) == (canonical, digest)  # idempotent
    (tmp_path / "link.npz").symlink_to(path)
    assert canonical_dataset("npz:link.npz?flip=1&pad=3")[0] == canonical


def test_builtin_datasets_keep_their_names_and_ids():
    assert canonical_dataset("mnist5k") == ("mnist5k", None)
    assert canonical_dataset("cifar10") == ("cifar10", None)
    spec = engine.baseline_spec("lenet300100", "mnist5k", epochs=1)
    assert spec.data_fingerprint is None and "data_fingerprint" not in spec.to_dict(omit_defaults=True)
    assert spec.spec_hash() == TrainSpec(arch=spec.arch, dataset="mnist5k", optim=spec.optim,
                                         schedule=spec.schedule).spec_hash()


def test_bad_user_dataset_names_are_one_line_errors(tmp_path):
    with pytest.raises(DataUnavailableError, match="not found"):
        canonical_dataset(f"npz:{tmp_path / 'missing.npz'}")
    with pytest.raises(DataUnavailableError, match="image folder .* not found"):
        canonical_dataset(f"imagefolder:{tmp_path / 'nope'}")
    write_npz(tmp_path / "x.npz", 0)
    with pytest.raises(BadValueError, match="not KEY=VALUE"):
        canonical_dataset(f"npz:{tmp_path / 'x.npz'}?flip")
    with pytest.raises(BadValueError, match="names no path"):
        canonical_dataset("npz:?pad=1")


def test_the_same_file_by_relative_and_absolute_path_is_one_run_and_one_dataset_in_compare(tmp_path, monkeypatch):
    path = write_npz(tmp_path / "work" / "x.npz", seed=0)
    monkeypatch.chdir(tmp_path / "work")
    relative = train_cli("-d", "npz:x.npz")
    absolute = train_cli("-d", f"npz:{path}")
    assert absolute["id"] == relative["id"] and absolute["run"] == relative["run"]
    other_seed = train_cli("-d", f"npz:{path}", "--seed", "1")
    assert relative["dataset"] == other_seed["dataset"] == f"npz:{path.resolve()}"
    rep = report([relative["run"], other_seed["run"]])
    assert rep.dataset == f"npz:{path.resolve()}"
    assert [g.n for g in rep.groups] == [2]  # one baseline group of both seeds


# ---------- same name, other data ----------


def test_two_npz_files_with_the_same_relative_name_in_two_directories_give_two_runs(tmp_path, monkeypatch):
    write_npz(tmp_path / "a" / "x.npz", seed=0)
    write_npz(tmp_path / "b" / "x.npz", seed=1)
    monkeypatch.chdir(tmp_path / "a")
    first = train_cli("-d", "npz:x.npz")
    monkeypatch.chdir(tmp_path / "b")
    second = train_cli("-d", "npz:x.npz")
    assert first["id"] != second["id"] and first["run"] != second["run"]
    specs = [json.loads((Path(r["run"]) / "spec.json").read_text())["spec"] for r in (first, second)]
    assert [s["dataset"] for s in specs] == [f"npz:{tmp_path / d / 'x.npz'}" for d in "ab"]
    assert specs[0]["data_fingerprint"] != specs[1]["data_fingerprint"]


def test_the_same_path_with_other_content_is_another_run(tmp_path, monkeypatch):
    path = write_npz(tmp_path / "x.npz", seed=0)
    first = train_cli("-d", f"npz:{path}")
    write_npz(path, seed=1)  # same size, other bytes
    second = train_cli("-d", f"npz:{path}")
    assert first["id"] != second["id"]


def test_a_changed_file_under_a_stored_run_is_detected_by_every_stage(tmp_path):
    path = write_npz(tmp_path / "x.npz", seed=0)
    spec = engine.baseline_spec("lenet300100", f"npz:{path}", epochs=1, batch_size=16)
    baseline = engine.train(spec)
    pruned = engine.prune(baseline, engine.prune_spec(baseline, "weight", {"ratio": 0.5, "include_linear": True}))
    assert engine.train(spec).path == baseline.path  # unchanged data: reused
    write_npz(path, seed=1)

    with pytest.raises(ArtifactError, match="stored run was trained on other data") as err:
        engine.train(spec)  # reusing the stored run
    message = str(err.value)
    assert f"npz file {path}" in message and baseline.path.name in message and "\n" not in message
    with pytest.raises(ArtifactError, match="the baseline was trained on other data"):
        engine.finetune_spec(pruned)
    with pytest.raises(ArtifactError, match="the baseline was trained on other data"):
        engine.scratch_spec(pruned, baseline, budget="B")

    for args in (["prune", str(baseline.path), "-M", "weight", "--ratio", "0.5", "--include-linear"],
                 ["finetune", str(pruned.path), "--epochs", "1"],
                 ["scratch", str(pruned.path), "-r", str(baseline.path)]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and str(path) in lines[0] and "other data" in lines[0], result.output

    write_npz(path, seed=0)  # the original bytes back: everything works again
    assert engine.train(spec).path == baseline.path
    assert engine.finetune_spec(pruned).data_fingerprint == spec.data_fingerprint


def test_derived_specs_carry_the_baseline_fingerprint_and_a_missing_file_is_named(tmp_path):
    path = write_npz(tmp_path / "x.npz", seed=0)
    spec = engine.baseline_spec("lenet300100", f"npz:{path}", epochs=1, batch_size=16)
    baseline = engine.train(spec)
    pruned = engine.prune(baseline, engine.prune_spec(baseline, "weight", {"ratio": 0.5, "include_linear": True}))
    for derived in (engine.finetune_spec(pruned, epochs=1), engine.scratch_spec(pruned, baseline, budget="E")):
        assert (derived.dataset, derived.data_fingerprint) == (spec.dataset, spec.data_fingerprint)
    path.unlink()
    with pytest.raises(DataUnavailableError, match=f"npz file {path} not found: run {baseline.path.name}"):
        engine.train(spec)


def test_specs_without_a_fingerprint_are_not_checked(tmp_path):
    verify_dataset("mnist5k", None, run="r", consequence="c")
    verify_dataset(f"npz:{tmp_path / 'gone.npz'}", None, run="r", consequence="c")  # made before fingerprints


# ---------- the fingerprints and their cache ----------


def _old(path: Path) -> Path:
    os.utime(path, ns=(OLD, OLD))
    return path


def test_file_fingerprints_are_cached_by_size_and_mtime(tmp_path, monkeypatch):
    path = _old(write_npz(tmp_path / "x.npz", seed=0))
    first = fingerprint.file_fingerprint(path)
    cache = json.loads(fingerprint.cache_file().read_text())
    assert cache["entries"][f"file:{path}"]["sha256"] == first
    assert fingerprint.cache_file().parent == Path(os.environ["PRUNECTL_HOME"]) / "cache"

    def no_hashing(_: Path) -> str:
        raise AssertionError("hashed again")

    monkeypatch.setattr(fingerprint, "_sha256", no_hashing)
    assert fingerprint.file_fingerprint(path) == first  # from the cache
    os.utime(path, ns=(OLD + 1, OLD + 1))  # touched: the cache no longer vouches for it
    with pytest.raises(AssertionError, match="hashed again"):
        fingerprint.file_fingerprint(path)


def test_a_just_written_file_is_not_cached_and_a_corrupt_cache_is_ignored(tmp_path):
    path = write_npz(tmp_path / "x.npz", seed=0)  # mtime: now, inside the racy window
    digest = fingerprint.file_fingerprint(path)
    assert not fingerprint.cache_file().exists()
    write_npz(path, seed=1)  # same size, maybe the same mtime tick: still seen
    assert fingerprint.file_fingerprint(path) != digest
    fingerprint.cache_file().parent.mkdir(parents=True)
    fingerprint.cache_file().write_text("{not json")
    _old(path)
    assert fingerprint.file_fingerprint(path) == fingerprint.file_fingerprint(path)
    assert json.loads(fingerprint.cache_file().read_text())["version"] == fingerprint.CACHE_VERSION


def test_imagefolder_trees_are_fingerprinted_by_paths_sizes_and_contents(tmp_path):
    root = tmp_path / "tree"
    write_folder(root)
    (root / "notes.txt").write_text("not part of the data")
    (root / "train" / "cat" / ".DS_Store").write_bytes(b"hidden")
    for file in root.rglob("*"):
        _old(file)
    canonical, digest = canonical_dataset(f"imagefolder:{root}?size=8")
    assert canonical == f"imagefolder:{root.resolve()}?size=8" and digest is not None
    assert canonical_dataset(f"imagefolder:{root}/?size=8")[1] == digest  # cached, same answer
    (root / "notes.txt").write_text("edited")  # outside train/ and val/: not data
    assert fingerprint.tree_fingerprint(root) == digest
    image = root / "val" / "dog" / "0.png"
    image.write_bytes(image.read_bytes()[:-1] + b"\x00")
    changed = fingerprint.tree_fingerprint(root)
    assert changed != digest
    (root / "val" / "dog" / "0.png").rename(root / "val" / "dog" / "9.png")
    assert fingerprint.tree_fingerprint(root) not in (digest, changed)  # a renamed image counts too
    with pytest.raises(ArtifactError, match=f"image folder {root.resolve()} has changed"):
        verify_dataset(canonical, digest, run="train-x", consequence="the stored run was trained on other data")


def test_old_specs_without_the_field_still_load():
    spec = TrainSpec(arch=default_arch("lenet300100"), dataset="npz:data/x.npz")
    record = spec.to_dict()
    record.pop("data_fingerprint")
    assert TrainSpec.from_dict(record) == spec
