"""Datasets: mnist5k's fixed split, batched per-image augmentation, and every on-disk format, built in tmp_path."""

from __future__ import annotations

import json
import math
import sys
from urllib.error import URLError

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from datafiles import tiny, write_cifar10, write_cifar100, write_folder, write_idx, write_svhn
from PIL import Image

from prunectl.data import (
    Augment,
    InMemoryDataset,
    dataset_shape,
    list_datasets,
    load_dataset,
    resolve_data_dir,
)
from prunectl.data.augment import _crop_index, _crop_table
from prunectl.data.embedded import mnist5k_split, split_fingerprint
from prunectl.errors import BadValueError, DataUnavailableError, UnknownNameError

MNIST5K_SPLIT_SHA256 = "3a25c39126d0175d0ee966bbd430b5294528b829fda6770010a8b10c59ab6c08"


# ---------- helpers ----------


def _epoch(batches) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x.clone(), y.clone()) for x, y in batches]


def _same(a, b) -> bool:
    pairs = zip(a, b, strict=False)
    return len(a) == len(b) and all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in pairs)


def _to_uint8(x: torch.Tensor, mean, std) -> torch.Tensor:
    """Undo the normalisation exactly (values were k/255 before it)."""
    m, s = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)
    return ((x * s + m) * 255).round().to(torch.uint8)


def _crop_of(out: torch.Tensor, image: torch.Tensor, pad: int, flips: bool) -> tuple[int, int, bool] | None:
    """The (dy, dx, mirrored) crop of the zero-padded `image` (C,H,W) that equals `out`, if any."""
    _, h, w = image.shape
    padded = F.pad(image, (pad, pad, pad, pad))
    for mirrored in (False, True) if flips else (False,):
        source = padded.flip(2) if mirrored else padded
        for dy in range(2 * pad + 1):
            for dx in range(2 * pad + 1):
                if torch.equal(source[:, dy:dy + h, dx:dx + w], out):
                    return dy, dx, mirrored
    return None


def test_list_datasets_names_the_registered_sets():
    names = list_datasets()
    assert names == sorted(names)
    assert {"cifar10", "cifar100", "fashion-mnist", "mnist", "mnist5k", "svhn"} <= set(names)
    assert list_datasets("cifar*") == ["cifar10", "cifar100"]
    assert dataset_shape("cifar100", data_dir="/nonexistent") == (100, (3, 32, 32))  # no files needed


def test_unknown_name_suggests_the_closest():
    with pytest.raises(UnknownNameError) as err:
        load_dataset("cifar11")
    assert err.value.closest == "cifar10" and "did you mean 'cifar10'" in str(err.value)
    with pytest.raises(BadValueError, match="npz:PATH"):
        load_dataset("npz")


def test_data_dir_precedence(tmp_path, monkeypatch):
    assert resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.setenv("PRUNECTL_DATA_DIR", str(tmp_path / "env"))
    assert resolve_data_dir() == tmp_path / "env"
    monkeypatch.delenv("PRUNECTL_DATA_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_data_dir() == tmp_path / "home" / ".cache" / "prunectl" / "data"


# ---------- mnist5k ----------


@pytest.fixture(scope="module")
def mnist5k():
    return load_dataset("mnist5k")


def test_mnist5k_split_is_fixed_stratified_and_disjoint(mnist5k):
    train_idx, test_idx = mnist5k_split()
    assert (len(train_idx), len(test_idx)) == (4000, 1000)
    assert not set(train_idx) & set(test_idx) and len(set(train_idx) | set(test_idx)) == 5000
    assert split_fingerprint(train_idx, test_idx) == MNIST5K_SPLIT_SHA256  # the split must never change
    assert mnist5k.num_examples("train") == 4000 and mnist5k.num_examples("test") == 1000
    for split, per_class in (("train", 400), ("test", 100)):
        _, labels = mnist5k.tensors(split)
        assert torch.bincount(labels, minlength=10).tolist() == [per_class] * 10
    again = load_dataset("mnist5k")
    for split in ("train", "test"):
        assert all(torch.equal(a, b) for a, b in zip(mnist5k.tensors(split), again.tensors(split), strict=True))


def test_mnist5k_facts(mnist5k):
    info = mnist5k.describe()
    assert json.loads(json.dumps(info)) == info
    assert info["sizes"] == {"train": 4000, "test": 1000} and info["input_size"] == [1, 28, 28]
    assert (mnist5k.mean, mnist5k.std) == ((0.1307,), (0.3081,))
    assert mnist5k.augment == Augment(pad_crop=2, hflip=False)


def test_batches_shapes_dtypes_and_normalisation(mnist5k):
    batches = mnist5k.batches("train", 64, shuffle=True, augment=True, seed=0)
    epoch = _epoch(batches)
    assert len(batches) == len(epoch) == math.ceil(4000 / 64)
    assert epoch[-1][0].shape[0] == 4000 - 64 * 62  # the last partial batch is kept
    x, y = epoch[0]
    assert x.shape == (64, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    raw = x * 0.3081 + 0.1307
    assert raw.min() >= -1e-6 and raw.max() <= 1 + 1e-6
    assert math.isclose(x.min().item(), -0.1307 / 0.3081, rel_tol=1e-5)  # background pixels are 0
    labels = torch.cat([y for _, y in epoch])
    assert torch.equal(labels.sort().values, mnist5k.tensors("train")[1].sort().values)  # each example once


def test_test_batches_are_the_plain_normalised_images(mnist5k):
    images, labels = mnist5k.tensors("test")
    x, y = next(iter(mnist5k.batches("test", 100, shuffle=False, augment=False, seed=5)))
    assert torch.equal(y, labels[:100])
    assert torch.allclose(x, (images[:100].float() / 255 - 0.1307) / 0.3081, atol=1e-5)


def test_same_seed_same_batches_other_seed_other_batches(mnist5k):
    a = mnist5k.batches("train", 256, shuffle=True, augment=True, seed=3)
    first = _epoch(a)
    assert _same(first, _epoch(a))  # re-iterable, replays exactly
    assert _same(first, _epoch(mnist5k.batches("train", 256, shuffle=True, augment=True, seed=3, device="cpu")))
    other = _epoch(mnist5k.batches("train", 256, shuffle=True, augment=True, seed=4))
    assert not torch.equal(first[0][1], other[0][1])  # order differs
    plain_a = _epoch(mnist5k.batches("train", 256, shuffle=False, augment=True, seed=3))
    plain_b = _epoch(mnist5k.batches("train", 256, shuffle=False, augment=True, seed=4))
    assert torch.equal(plain_a[0][1], plain_b[0][1]) and not torch.equal(plain_a[0][0], plain_b[0][0])  # crops


def test_batches_never_touch_the_global_rng(mnist5k):
    state = torch.get_rng_state()
    _epoch(mnist5k.batches("train", 500, shuffle=True, augment=True, seed=1))
    assert torch.equal(state, torch.get_rng_state())


def test_each_augmented_image_is_a_true_unflipped_crop_of_the_zero_padded_image(mnist5k):
    images, _ = mnist5k.tensors("train")
    x, _ = next(iter(mnist5k.batches("train", 64, shuffle=False, augment=True, seed=11)))
    out = _to_uint8(x, mnist5k.mean, mnist5k.std)
    offsets = set()
    for i in range(64):
        found = _crop_of(out[i], images[i], pad=2, flips=False)
        assert found is not None, f"sample {i} is not a crop of its padded image"
        offsets.add(found)
    assert len(offsets) > 5  # each image draws its own offset


def test_identical_images_in_one_batch_get_their_own_crops_and_flips():
    image = torch.arange(3 * 8 * 9, dtype=torch.uint8).view(1, 3, 8, 9)
    batch = image.expand(64, -1, -1, -1).contiguous()
    out = Augment(pad_crop=2, hflip=True).apply(batch, torch.Generator().manual_seed(0))
    found = [_crop_of(o, image[0], pad=2, flips=True) for o in out]
    assert None not in found
    assert len(set(found)) > 20 and {f[2] for f in found} == {False, True}


def test_flip_only_mirrors_and_no_flip_never_does():
    image = torch.arange(20, dtype=torch.uint8).view(1, 1, 4, 5)
    batch = image.expand(200, -1, -1, -1)
    flipped = Augment(hflip=True).apply(batch, torch.Generator().manual_seed(1))
    is_plain = (flipped == image).flatten(1).all(1)
    is_mirror = (flipped == image.flip(3)).flatten(1).all(1)
    assert bool((is_plain | is_mirror).all()) and 50 < int(is_mirror.sum()) < 150
    assert torch.equal(Augment().apply(batch, torch.Generator()), batch)


def test_large_padding_computes_indices_instead_of_a_table():
    image = torch.randint(0, 256, (1, 2, 70, 60), dtype=torch.uint8)
    out = Augment(pad_crop=24, hflip=True).apply(image.expand(3, -1, -1, -1), torch.Generator().manual_seed(2))
    assert all(_crop_of(o, image[0], pad=24, flips=True) is not None for o in out)
    codes = torch.arange(2 * 3 * 3)
    assert torch.equal(_crop_table(4, 5, 1, True, "cpu"), _crop_index(codes, 4, 5, 1, True))


def test_augment_validation_and_json():
    with pytest.raises(BadValueError):
        Augment(pad_crop=-1)
    with pytest.raises(BadValueError):
        Augment(pad_crop=2, resized_crop=32)
    with pytest.raises(BadValueError):
        Augment(resized_crop=32, resized_crop_scale=(0.5, 0.1))
    imagenet = Augment(resized_crop=224, hflip=True)
    assert Augment.from_dict(json.loads(json.dumps(imagenet.to_dict()))) == imagenet
    assert Augment(pad_crop=4, hflip=True).to_dict(omit_defaults=True) == {"pad_crop": 4, "hflip": True}


def test_bad_split_and_batch_size(mnist5k):
    for split, size in (("val", 64), ("train", 0)):
        with pytest.raises(BadValueError):
            mnist5k.batches(split, size, shuffle=False, augment=False, seed=0)


# ---------- torchvision formats ----------


def test_cifar10_from_pickled_batches(tmp_path):
    written = write_cifar10(tmp_path)
    ds = load_dataset("cifar10", data_dir=tmp_path)
    assert (ds.num_examples("train"), ds.num_examples("test"), ds.num_classes) == (20, 6, 10)
    images, labels = ds.tensors("train")
    assert torch.equal(images, torch.from_numpy(written["x"])) and labels.tolist() == written["y"].tolist()
    assert ds.mean == (0.4914, 0.4822, 0.4465) and ds.std == (0.2023, 0.1994, 0.2010)
    assert ds.augment == Augment(pad_crop=4, hflip=True)
    x, y = next(iter(ds.batches("train", 8, shuffle=True, augment=True, seed=0)))
    assert x.shape == (8, 3, 32, 32) and y.dtype == torch.int64


def test_cifar100_uses_its_own_statistics_and_fine_labels(tmp_path, monkeypatch):
    write_cifar100(tmp_path / "data")
    monkeypatch.setenv("PRUNECTL_DATA_DIR", str(tmp_path / "data"))
    ds = load_dataset("cifar100")
    assert ds.num_classes == 100 and ds.num_examples("train") == 12
    assert ds.mean == (0.5071, 0.4865, 0.4409) and ds.std == (0.2673, 0.2564, 0.2762)
    assert ds.tensors("train")[1].tolist() == [(i % 100 * 7) % 100 for i in range(12)]


@pytest.mark.parametrize(("name", "folder", "mean"), [("mnist", "MNIST", 0.1307), ("fashion-mnist", "FashionMNIST",
                                                                                     0.2860)])
def test_mnist_style_idx_files(tmp_path, name, folder, mean):
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (10, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / folder / "raw", "train", train, np.arange(10) % 10)
    write_idx(tmp_path / folder / "raw", "t10k", train[:4], np.arange(4))
    ds = load_dataset(name, data_dir=tmp_path)
    assert ds.input_size == (1, 28, 28) and ds.num_examples("test") == 4 and ds.mean == (mean,)
    assert torch.equal(ds.tensors("train")[0][:, 0], torch.from_numpy(train))
    assert not ds.augment.hflip and ds.augment.pad_crop == 2


def test_svhn_from_mat_files(tmp_path):
    written = write_svhn(tmp_path)
    ds = load_dataset("svhn", data_dir=tmp_path)
    images, labels = ds.tensors("train")
    assert images.shape == (12, 3, 32, 32) and labels.tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2]
    assert torch.equal(images[2], torch.from_numpy(written["train"][:, :, :, 2]).permute(2, 0, 1))
    assert ds.tensors("test")[1].tolist() == [1, 2, 3] and not ds.augment.hflip


def test_svhn_without_scipy_says_so(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "scipy.io", None)
    with pytest.raises(DataUnavailableError, match="scipy"):
        load_dataset("svhn", data_dir=tmp_path)


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "mnist", "fashion-mnist", "svhn", "imagenet"])
def test_missing_files_offline_is_a_one_line_hint(tmp_path, name):
    with pytest.raises(DataUnavailableError) as err:
        load_dataset(name, data_dir=tmp_path / "nowhere")
    message = str(err.value)
    assert "\n" not in message and name in message and str(tmp_path / "nowhere") in message
    assert "--data-dir" in message


def test_failed_download_is_a_one_line_error(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr("torchvision.datasets.cifar.download_and_extract_archive", offline)
    with pytest.raises(DataUnavailableError, match="could not download cifar10") as err:
        load_dataset("cifar10", data_dir=tmp_path, download=True)
    assert "\n" not in str(err.value)


def test_damaged_files_are_reported(tmp_path):
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(DataUnavailableError, match="could not read cifar10"):
        load_dataset("cifar10", data_dir=tmp_path)


# ---------- npz ----------


def test_npz_without_test_arrays_gets_a_stratified_split(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (150, 16, 24), dtype=np.uint8)
    labels = np.repeat(np.arange(3), 50)
    np.savez(tmp_path / "d.npz", images=images, labels=labels)
    ds = load_dataset(f"npz:{tmp_path / 'd.npz'}")
    assert ds.input_size == (1, 16, 24) and ds.num_classes == 3
    assert torch.bincount(ds.tensors("test")[1]).tolist() == [10, 10, 10]
    assert torch.bincount(ds.tensors("train")[1]).tolist() == [40, 40, 40]
    train = ds.tensors("train")[0].numpy() / 255
    assert ds.mean[0] == pytest.approx(train.mean(), abs=1e-4) and ds.std[0] == pytest.approx(train.std(), abs=1e-4)
    assert ds.augment == Augment(pad_crop=2)  # min(H, W) // 8, no flip
    assert _same(_epoch(ds.batches("train", 32, shuffle=True, augment=True, seed=0)),
                 _epoch(load_dataset(f"npz:{tmp_path / 'd.npz'}").batches("train", 32, shuffle=True, augment=True,
                                                                            seed=0)))


@pytest.mark.parametrize("layout", ["nhwc", "nchw"])
def test_npz_channel_layouts_and_test_arrays(tmp_path, layout, monkeypatch):
    x, y = tiny(12, 3, 32, 32, 4, seed=1)
    tx, ty = tiny(5, 3, 32, 32, 4, seed=2)
    if layout == "nhwc":
        x, tx = x.transpose(0, 2, 3, 1), tx.transpose(0, 2, 3, 1)
    (tmp_path / "data").mkdir()
    np.savez(tmp_path / "data" / "c.npz", images=x, labels=y, test_images=tx, test_labels=ty)
    monkeypatch.chdir(tmp_path)
    ds = load_dataset("npz:c.npz?pad=1&flip=1")  # relative: found in $PRUNECTL_DATA_DIR
    assert ds.input_size == (3, 32, 32) and ds.num_examples("test") == 5
    assert ds.augment == Augment(pad_crop=1, hflip=True)
    expected = x if layout == "nchw" else x.transpose(0, 3, 1, 2)
    assert torch.equal(ds.tensors("train")[0], torch.from_numpy(np.ascontiguousarray(expected)))


def test_npz_errors(tmp_path):
    with pytest.raises(DataUnavailableError, match="not found"):
        load_dataset(f"npz:{tmp_path / 'missing.npz'}")
    cases = {
        "nolabels": ({"images": np.zeros((4, 8, 8), np.uint8)}, "no 'labels'"),
        "mismatch": ({"images": np.zeros((4, 8, 8), np.uint8), "labels": np.arange(3)}, "4 images"),
        "floats": ({"images": np.zeros((4, 8, 8), np.float32), "labels": np.arange(4)}, "uint8"),
        "halftest": ({"images": np.zeros((4, 8, 8), np.uint8), "labels": np.arange(4),
                      "test_images": np.zeros((2, 8, 8), np.uint8)}, "both"),
        "badtest": ({"images": np.zeros((4, 8, 8), np.uint8), "labels": np.arange(4),
                     "test_images": np.zeros((2, 9, 8), np.uint8), "test_labels": np.arange(2)}, "test_images"),
    }
    for name, (arrays, match) in cases.items():
        np.savez(tmp_path / f"{name}.npz", **arrays)
        with pytest.raises(BadValueError, match=match) as err:
            load_dataset(f"npz:{tmp_path / name}.npz")
        assert "\n" not in str(err.value)
    with pytest.raises(BadValueError, match="unknown dataset option"):
        load_dataset(f"npz:{tmp_path / 'nolabels.npz'}?size=3")


# ---------- imagefolder ----------


def test_imagefolder_streams_with_the_imagenet_protocol(tmp_path):
    write_folder(tmp_path / "tree", side=72)
    ds = load_dataset(f"imagefolder:{tmp_path / 'tree'}?size=8&workers=0")
    assert ds.input_size == (3, 8, 8) and ds.num_classes == 2
    assert (ds.num_examples("train"), ds.num_examples("test")) == (6, 4)
    assert ds.augment == Augment(resized_crop=8, hflip=True) and ds.mean == (0.485, 0.456, 0.406)
    train = ds.batches("train", 4, shuffle=True, augment=True, seed=0)
    epoch = _epoch(train)
    assert len(train) == 2 and [x.shape for x, _ in epoch] == [(4, 3, 8, 8), (2, 3, 8, 8)]
    assert epoch[0][0].dtype == torch.float32 and epoch[0][1].dtype == torch.int64
    assert _same(epoch, _epoch(train))
    assert not _same(epoch, _epoch(ds.batches("train", 4, shuffle=True, augment=True, seed=1)))
    x, y = next(iter(ds.batches("test", 4, shuffle=False, augment=False, seed=0)))
    assert y.tolist() == [0, 0, 1, 1]
    path = ds.samples("test")[0][0]
    expected = TF.pil_to_tensor(TF.center_crop(TF.resize(Image.open(path).convert("RGB"), 9), [8, 8]))
    assert torch.equal(_to_uint8(x[:1], ds.mean, ds.std)[0], expected)


def test_imagefolder_batches_do_not_depend_on_workers(tmp_path):
    write_folder(tmp_path, side=72)
    state = torch.get_rng_state()
    in_process = _epoch(load_dataset(f"imagefolder:{tmp_path}?size=6&workers=0").batches(
        "train", 4, shuffle=True, augment=True, seed=7))
    assert torch.equal(state, torch.get_rng_state())
    two_workers = _epoch(load_dataset(f"imagefolder:{tmp_path}?size=6&workers=2").batches(
        "train", 4, shuffle=True, augment=True, seed=7))
    assert _same(in_process, two_workers)


def test_imagefolder_test_dir_and_class_mapping(tmp_path):
    write_folder(tmp_path, test_dir="test", test_classes=("dog",))
    ds = load_dataset(f"imagefolder:{tmp_path}?size=4&workers=0")
    assert [label for _, label in ds.samples("test")] == [1, 1]
    assert ds.describe()["test_folder"] == "test"
    with pytest.raises(DataUnavailableError, match="train/"):
        load_dataset(f"imagefolder:{tmp_path / 'test'}")
    with pytest.raises(DataUnavailableError, match="not found"):
        load_dataset(f"imagefolder:{tmp_path / 'nope'}")


def test_in_memory_dataset_rejects_inconsistent_tensors():
    x, y = torch.zeros(4, 1, 8, 8, dtype=torch.uint8), torch.zeros(4, dtype=torch.int64)
    for train, test, mean in (((x.float(), y), (x, y), (0.5,)), ((x, y), (x, y[:3]), (0.5,)),
                              ((x, y), (x, y), (0.5, 0.5)), ((x, y), (x[:, :, :4], y), (0.5,))):
        with pytest.raises(BadValueError):
            InMemoryDataset("t", train=train, test=test, num_classes=2, mean=mean, std=mean, augment=Augment())
