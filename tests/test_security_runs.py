"""Tampered run directories and absurd sizes: every damaged record is a one-line error (issue 13, classes 4 and 5)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hubserver import hub  # noqa: F401  (the fixture; tests/ is on sys.path)
from test_hub import assert_nothing_written, cli, copy_of, one_line_error, trained  # noqa: F401

from prunectl import engine, paths
from prunectl.core.arch import Arch
from prunectl.core.io import save_tensors
from prunectl.engine import hub as hub_engine
from prunectl.errors import ArtifactError, BadValueError
from prunectl.models import build_model, default_arch
from prunectl.runs.store import open_run


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    data = change(data)
    path.write_text(json.dumps(data))


def one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


# --- class 5: stored and pulled runs are validated, not only on the surface --------------------------------------
@pytest.mark.parametrize(("content", "words"), [
    ("[]", "must be a JSON object"),
    ('{"kind": "TrainSpec", "id": "../../x", "stage": "train", "spec": {}}', "not 12 hex digits"),
    ('{"kind": "TrainSpec", "id": "abcdefabcdef", "stage": "../x", "spec": {}}', "not a stage name"),
    ('{"kind": "TrainSpec", "id": "abcdefabcdef", "stage": "train", "spec": []}', "'spec' object"),
])
def test_a_malformed_spec_record_is_a_one_line_error_naming_the_file(copy_of, content, words):
    run = copy_of()
    (run / paths.SPEC).write_text(content)
    with pytest.raises(ArtifactError) as err:
        _ = open_run(run).record
    assert words in one_line(err) and str(run / paths.SPEC) in str(err.value)
    error = one_line_error(cli("push", str(run), "hf:alice/never-contacted"))  # refused before any request
    assert words in error and "delete the run directory" in error


def test_an_edited_spec_that_keeps_its_id_is_refused(copy_of):
    run = copy_of()
    edit_json(run / paths.SPEC, lambda d: {**d, "spec": {**d["spec"], "seed": 7}})
    with pytest.raises(ArtifactError, match="is not the hash of its spec"):
        _ = open_run(run).id


@pytest.mark.parametrize("value", ['"93.1"', "true", "[1]", "1e999"])
def test_a_non_numeric_result_is_refused(copy_of, value):
    run = copy_of()
    text = (run / paths.RESULT).read_text()
    data = json.loads(text)
    (run / paths.RESULT).write_text(json.dumps({**data, "final_acc": "X"}).replace('"X"', value))
    with pytest.raises(ArtifactError) as err:
        open_run(run).result()
    assert "final_acc" in one_line(err) or "not valid JSON" in str(err.value)


def test_a_lineage_that_is_not_a_list_of_records_is_refused(copy_of):
    run = copy_of()
    (run / paths.LINEAGE).write_text('{"id": "abc"}')
    with pytest.raises(ArtifactError, match="not a list"):
        open_run(run).lineage()
    (run / paths.LINEAGE).write_text('[{"id": "abc"}]')
    with pytest.raises(ArtifactError, match="entry 0"):
        open_run(run).lineage()


@pytest.mark.parametrize("kind", ["shape", "name", "values"])
def test_a_mask_that_does_not_fit_the_model_is_refused_not_broadcast(copy_of, kind):
    run = copy_of()
    weights = open_run(run).weights()
    name = next(k for k in weights if k.endswith("weight"))
    mask = {name: torch.ones_like(weights[name])}
    if kind == "shape":
        mask = {name: torch.ones(weights[name].shape[1])}  # would broadcast silently
    elif kind == "name":
        mask = {"not.a.layer": torch.ones(3)}
    else:
        mask[name] = mask[name] * 0.5
    save_tensors(run / paths.MASK, mask)
    with pytest.raises(ArtifactError) as err:
        open_run(run).mask()
    assert paths.MASK in one_line(err)


def test_a_checkpoint_from_another_model_says_to_delete_it(tmp_path):
    from prunectl.runs.store import prepare_run

    spec = engine.baseline_spec("lenet300100", "mnist5k", epochs=2)
    out = tmp_path / "run"
    prepare_run(spec, "train", out)
    other = build_model(default_arch("lenet5"))
    save_tensors(out / paths.CHECKPOINT, {f"model.{k}": v for k, v in other.state_dict().items()},
                 metadata={"epoch": "1", "wall_seconds": "0.1", "history": "[]", "param_groups": "[]"})
    with pytest.raises(ArtifactError) as err:
        engine.train(spec, out=out)
    assert "delete the checkpoint to restart this run" in one_line(err)
    assert (out / paths.CHECKPOINT).is_file() and not (out / paths.RESULT).exists()
    (out / paths.CHECKPOINT).unlink()
    assert engine.train(spec, out=out).is_done()


def test_a_pulled_run_with_a_forged_id_is_refused(hub, trained, tmp_path):  # noqa: F811
    hub_engine.push(trained, "hf:alice/lenet")
    record = json.loads(hub.server.files("alice/lenet")[paths.SPEC])
    hub.server.put_file("alice/lenet", paths.SPEC, json.dumps({**record, "id": "../../x"}).encode())
    assert "not 12 hex digits" in one_line_error(cli("pull", "hf:alice/lenet", "--out", str(tmp_path / "out")))
    assert_nothing_written(tmp_path / "out")
    hub.server.put_file("alice/lenet", paths.SPEC, json.dumps({**record, "spec": {**record["spec"], "seed": 3}})
                        .encode())
    assert "not the hash of its spec" in one_line_error(cli("pull", "hf:alice/lenet", "--out", str(tmp_path / "out")))
    assert_nothing_written(tmp_path / "out")


# --- class 4: sizes are bounded before anything is allocated ----------------------------------------------------
@pytest.mark.parametrize(("change", "words"), [
    (lambda c: {**c, "config": {**c["config"], "hidden": [10**9, 100]}}, "parameter count"),
    (lambda c: {**c, "num_classes": 10**12}, "num_classes"),
    (lambda c: {**c, "input_size": [1, 200_000, 200_000]}, "input size"),
])
def test_a_pulled_config_with_absurd_sizes_is_refused_before_building(hub, trained, tmp_path, change, words):  # noqa: F811
    hub_engine.push(trained, "hf:alice/lenet")
    config = json.loads(hub.server.files("alice/lenet")[paths.CONFIG])
    hub.server.put_file("alice/lenet", paths.CONFIG, json.dumps(change(config)).encode())
    start = time.perf_counter()
    error = one_line_error(cli("pull", "hf:alice/lenet", "--out", str(tmp_path / "out")))
    assert words in error and "over the limit" in error and "PRUNECTL_MAX_" in error
    assert time.perf_counter() - start < 30  # refused, not allocated
    assert_nothing_written(tmp_path / "out")


def test_deeply_nested_json_is_refused_in_one_line(copy_of):
    run = copy_of()
    (run / paths.ARCH).write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(BadValueError) as err:
        open_run(run).arch()
    assert "nesting depth" in one_line(err)
    (run / paths.RESULT).write_text('{"a":' * 200 + "1" + "}" * 200)
    with pytest.raises(BadValueError, match="nesting depth"):
        open_run(run).result()


def test_model_option_widths_are_bounded(tmp_path):
    error = one_line_error(cli("train", "-m", "vgg16", "-d", "mnist5k", "--model-option", "cfg=[1000000000]",
                               "--epochs", "1", "--out", str(tmp_path / "run")))
    assert "over the limit" in error or "cannot be built" in error
    error = one_line_error(cli("train", "-m", "vgg16", "-d", "mnist5k", "--model-option", "cfg=[1e9]",
                               "--epochs", "1", "--out", str(tmp_path / "run2")))
    assert "positive integer" in error or "cannot be built" in error


def test_npz_labels_are_bounded(tmp_path):
    from prunectl.data import load_dataset

    x = np.zeros((10, 8, 8), np.uint8)
    y = np.arange(10)
    y[3] = 10**11
    np.savez(tmp_path / "big.npz", images=x, labels=y)
    with pytest.raises(BadValueError) as err:
        load_dataset(f"npz:{tmp_path / 'big.npz'}")
    assert "largest label" in one_line(err) and "PRUNECTL_MAX_CLASSES" in str(err.value)


def test_limits_can_be_raised_and_lowered_explicitly(monkeypatch):
    with pytest.raises(BadValueError, match="PRUNECTL_MAX_CLASSES"):
        Arch("mlp", {"hidden": [4]}, 2_000_000, (1, 28, 28))
    monkeypatch.setenv("PRUNECTL_MAX_CLASSES", "3e6")
    assert Arch("mlp", {"hidden": [4]}, 2_000_000, (1, 28, 28)).num_classes == 2_000_000
    monkeypatch.setenv("PRUNECTL_MAX_PARAMS", "1000")
    with pytest.raises(BadValueError, match="parameter count of lenet300100"):
        build_model(default_arch("lenet300100"))
    monkeypatch.setenv("PRUNECTL_MAX_PARAMS", "1e9")
    monkeypatch.setenv("PRUNECTL_MAX_ACTIVATIONS", "1000")  # lenet5: 14,602 output elements per example
    with pytest.raises(BadValueError, match="activation size of lenet5"):
        build_model(default_arch("lenet5"))
    monkeypatch.setenv("PRUNECTL_MAX_ACTIVATIONS", "20000")
    assert build_model(default_arch("lenet5")) is not None
    monkeypatch.setenv("PRUNECTL_MAX_PARAMS", "lots")
    with pytest.raises(BadValueError, match="not a positive number"):
        build_model(default_arch("lenet300100"))


def test_the_size_check_leaves_the_global_rng_alone():
    from prunectl.models.base import FAMILIES

    arch = default_arch("lenet5")
    torch.manual_seed(0)
    checked = build_model(arch).state_dict()  # measured on the meta device first
    torch.manual_seed(0)
    plain = FAMILIES.get(arch.family)(arch).state_dict()
    assert all(torch.equal(checked[k], plain[k]) for k in plain)


def test_an_npz_declaring_huge_arrays_is_refused_before_decompressing(tmp_path):
    import zipfile

    from prunectl.data import load_dataset

    header = np.lib.format.header_data_from_array_1_0(np.zeros(1, np.uint8))
    header["shape"] = (10**11, 8, 8)  # 6.4 TB declared by a file of a few hundred bytes
    with zipfile.ZipFile(tmp_path / "bomb.npz", "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("images.npy", "w") as f:
            np.lib.format.write_array_header_1_0(f, header)
        with z.open("labels.npy", "w") as f:
            np.save(f, np.zeros(10, np.int64))
    with pytest.raises(BadValueError) as err:
        load_dataset(f"npz:{tmp_path / 'bomb.npz'}")
    assert "decoded size" in one_line(err) and "PRUNECTL_MAX_DATA_BYTES" in str(err.value)
