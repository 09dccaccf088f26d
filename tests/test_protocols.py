"""Protocols come from the dataset entry: registered datasets declare theirs, user data gets a stated default
inferred from its images, and the choice is said (train's first lines, info) and kept in the run's record."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from prunectl import engine
from prunectl.cli.app import app
from prunectl.core.io import read_json
from prunectl.data import DATASETS, dataset_facts, load_dataset
from prunectl.data.augment import Augment
from prunectl.engine.protocols import CIFAR, IMAGENET, PROTOCOLS, QUICK, protocol_for, protocol_of

runner = CliRunner()


def write_shapes(root: Path, side: int = 28, per_class: tuple[int, int] = (40, 15)) -> None:
    """A separable 3-class ImageFolder of greyscale `side`-px images: a bright bar at the top, at the left, or a
    bright centre square, over noise."""
    rng = np.random.default_rng(0)
    h = side // 3
    for split, count in zip(("train", "val"), per_class, strict=True):
        for label in range(3):
            (root / split / f"c{label}").mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 90, (side, side), dtype=np.uint8)
                if label == 0:
                    pixels[:h] = 230
                elif label == 1:
                    pixels[:, :h] = 230
                else:
                    pixels[h:2 * h, h:2 * h] = 230
                Image.fromarray(pixels, mode="L").save(root / split / f"c{label}" / f"{i}.png")


def test_every_registered_dataset_declares_the_protocol_it_always_had():
    declared = {name: DATASETS.get(name).protocol for name in DATASETS}
    assert declared == {"mnist5k": "quick", "cifar10": "cifar", "cifar100": "cifar", "mnist": "cifar",
                        "fashion-mnist": "cifar", "svhn": "cifar", "imagenet": "imagenet"}
    assert protocol_for("mnist5k") is QUICK and protocol_for("cifar10") is CIFAR and protocol_for("imagenet") is IMAGENET
    assert set(PROTOCOLS) == {"quick", "cifar", "imagenet"}


def test_a_small_greyscale_image_folder_gets_the_small_image_protocol_and_learns(tmp_path):
    write_shapes(tmp_path / "shapes")
    name = f"imagefolder:{tmp_path / 'shapes'}?workers=0"
    ds = load_dataset(name)
    assert ds.input_size == (1, 28, 28) and ds.num_classes == 3
    assert ds.augment == Augment(pad_crop=3) and len(ds.mean) == 1  # CIFAR-style crop, no flip, own statistics
    assert ds.protocol is not None and ds.protocol.name == "cifar" and "28" in ds.protocol.why
    spec = engine.baseline_spec("smallcnn", name, epochs=4, batch_size=16)
    assert spec.optim == CIFAR.optim.replace(batch_size=16) and spec.arch.input_size == (1, 28, 28)
    notes: list[str] = []
    run = engine.train(spec, out=tmp_path / "run", note=notes.append)
    assert notes == [f"protocol: cifar ({ds.protocol.why})"]
    assert run.result()["final_acc"] >= 90.0
    record = read_json(run.file("spec.json"))
    assert record["protocol"]["name"] == "cifar" and "protocol" not in record["spec"]
    assert run.id == spec.spec_hash()  # the entry is outside what the id hashes


def test_small_image_folder_batches_are_seeded_and_worker_independent(tmp_path):
    write_shapes(tmp_path, side=16, per_class=(4, 2))
    load = lambda workers: load_dataset(f"imagefolder:{tmp_path}?workers={workers}&flip=1")  # noqa: E731
    one = [x for x, _ in load(0).batches("train", 5, shuffle=True, augment=True, seed=3)]
    two = [x for x, _ in load(2).batches("train", 5, shuffle=True, augment=True, seed=3)]
    other = [x for x, _ in load(0).batches("train", 5, shuffle=True, augment=True, seed=4)]
    assert all(a.equal(b) for a, b in zip(one, two, strict=True))
    assert not all(a.equal(b) for a, b in zip(one, other, strict=True))
    assert load(0).augment == Augment(pad_crop=2, hflip=True)


def test_large_images_keep_the_imagenet_protocol(tmp_path):
    write_shapes(tmp_path / "big", side=96, per_class=(2, 1))
    ds = load_dataset(f"imagefolder:{tmp_path / 'big'}?workers=0")
    assert ds.input_size == (3, 224, 224) and ds.augment == Augment(resized_crop=224, hflip=True)
    assert ds.protocol is not None and ds.protocol.name == "imagenet"


def test_npz_protocol_follows_the_image_size(tmp_path):
    rng = np.random.default_rng(0)
    for side in (20, 80):
        np.savez(tmp_path / f"x{side}.npz", images=rng.integers(0, 255, (10, side, side), dtype=np.uint8),
                 labels=np.arange(10) % 2)
    assert dataset_facts(f"npz:{tmp_path / 'x20.npz'}").protocol.name == "cifar"
    assert dataset_facts(f"npz:{tmp_path / 'x80.npz'}").protocol.name == "imagenet"


def test_runs_recorded_before_the_protocol_entry_keep_the_rule_of_their_time():
    def record(dataset: str) -> dict:
        return {"kind": "TrainSpec", "spec": {"dataset": dataset}}

    assert protocol_of(record("mnist5k")) is QUICK and protocol_of(record("cifar100")) is CIFAR
    assert protocol_of(record("imagefolder:/data/tree")) is IMAGENET and protocol_of(record("npz:x.npz")) is CIFAR
    assert protocol_of({**record("imagefolder:/data/tree"), "protocol": {"name": "cifar", "why": "..."}}) is CIFAR


def test_train_says_the_protocol_first_and_info_shows_it(tmp_path):
    write_shapes(tmp_path / "shapes", side=12, per_class=(3, 1))
    name = f"imagefolder:{tmp_path / 'shapes'}?workers=0"
    result = runner.invoke(app, ["train", "-m", "smallcnn", "-d", name, "--epochs", "1", "--out",
                                 str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines()[0].startswith("protocol: cifar (imagefolder ")
    by_run = json.loads(runner.invoke(app, ["info", str(tmp_path / "run"), "--json"]).stdout)
    assert by_run["protocol"]["name"] == "cifar"
    by_model = runner.invoke(app, ["info", "vgg16", "-d", "cifar10"])
    assert "training protocol: cifar (cifar10 is registered with the cifar protocol)" in by_model.stdout
    assert json.loads(runner.invoke(app, ["info", "vgg16", "--json"]).stdout)["protocol"] is None


def test_datasets_lists_protocols_and_documents_the_user_data_options():
    doc = json.loads(runner.invoke(app, ["datasets", "--json"]).stdout)
    assert {r["name"]: r["protocol"] for r in doc["datasets"]}["mnist5k"] == "quick"
    options = {r["name"]: set(r["options"]) for r in doc["user_data"]}
    assert options == {"npz:PATH": {"pad", "flip"}, "imagefolder:PATH": {"size", "resize", "flip", "pad", "workers"}}
    human = runner.invoke(app, ["datasets"]).stdout
    assert "imagefolder:PATH" in human and "npz:PATH" in human and "protocol" in human and "pad=" in human


@pytest.mark.parametrize("option", ["pad=2"])
def test_pad_is_refused_for_large_images(tmp_path, option):
    write_shapes(tmp_path, side=96, per_class=(1, 1))
    with pytest.raises(Exception, match="pad= is for small images"):
        load_dataset(f"imagefolder:{tmp_path}?workers=0&{option}")
