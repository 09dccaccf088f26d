"""The fast path's settings: precision and compile are part of the spec (ids of existing specs unchanged), bf16
autocast leaves behaviours fp32 gradients, compile changes nothing but the wrapper, and one epoch's crop codes
drawn at once are the batch-by-batch ones."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from prunectl import engine, paths
from prunectl.cli.app import app
from prunectl.core.hparams import OptimSpec, ScheduleSpec, TrainSpec
from prunectl.core.io import load_tensors
from prunectl.data import Shard, load_dataset
from prunectl.errors import BadValueError
from prunectl.models import create_model
from prunectl.training import precision
from prunectl.training.hooks import TrainingBehaviour
from prunectl.training.trainer import Trainer


@pytest.fixture(scope="module")
def mnist():
    return load_dataset("mnist5k")


def test_precision_and_compile_enter_the_spec_only_when_set():
    plain = engine.baseline_spec("smallcnn", "mnist5k", epochs=1)
    assert "precision" not in plain.to_dict(omit_defaults=True) and "compile" not in plain.to_dict(omit_defaults=True)
    bf16, compiled = plain.replace(precision="bf16"), plain.replace(compile=True)
    assert len({plain.spec_hash(), bf16.spec_hash(), compiled.spec_hash()}) == 3
    assert TrainSpec.from_dict(bf16.to_dict()) == bf16 and TrainSpec.from_dict(compiled.to_dict()) == compiled
    with pytest.raises(BadValueError, match="precision must be one of fp32, bf16"):
        plain.replace(precision="fp16")


class GradDtypes(TrainingBehaviour):
    """Records the dtype of every gradient a behaviour sees."""

    def __init__(self) -> None:
        self.seen: set[torch.dtype] = set()

    def after_backward(self, model):
        self.seen |= {p.grad.dtype for p in model.parameters() if p.grad is not None}


def _trainer(run_dir, data, behaviours=(), **options) -> Trainer:
    torch.manual_seed(0)
    run_dir.mkdir(parents=True, exist_ok=True)
    return Trainer(create_model("smallcnn"), data, OptimSpec(lr=0.1, batch_size=64), ScheduleSpec(epochs=1),
                   0, run_dir, behaviours, device="cpu", **options)


def test_bf16_autocast_trains_with_fp32_parameters_and_gradients(tmp_path, mnist):
    seen = GradDtypes()
    trainer = _trainer(tmp_path / "bf16", mnist, [seen], precision="bf16")
    summary = trainer.fit()
    assert seen.seen == {torch.float32}
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    assert summary["final_acc"] > 20  # it learns (10 classes: chance is 10 %; fp32 gets 31 %)
    fp32 = load_tensors(_fit(_trainer(tmp_path / "fp32", mnist)))
    bf16 = load_tensors(tmp_path / "bf16" / paths.CHECKPOINT)
    assert any(not torch.equal(fp32[k], bf16[k]) for k in fp32 if k.startswith("model."))  # bf16 did run


def _fit(trainer: Trainer):
    trainer.fit()
    return trainer.run_dir / paths.CHECKPOINT


def test_compile_wraps_the_model_and_keeps_the_numbers(tmp_path, mnist, monkeypatch):
    monkeypatch.setattr(precision, "COMPILE_BACKEND", "eager")  # no code generation: the same kernels run
    compiled = _trainer(tmp_path / "compiled", mnist, compile=True)
    assert isinstance(compiled.step_model, torch._dynamo.eval_frame.OptimizedModule)
    a = load_tensors(_fit(compiled))
    b = load_tensors(_fit(_trainer(tmp_path / "eager", mnist)))
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("model."))


def test_epoch_codes_drawn_at_once_equal_the_batch_by_batch_draws(mnist):
    images, labels = mnist.tensors("train")
    generator = torch.Generator().manual_seed(7)
    order = torch.randperm(len(labels), generator=generator)
    expected = [mnist.normalise(mnist.augment.apply(images[order[s:s + 100]], generator))
                for s in range(0, len(labels), 100)]
    got = [x for x, _ in mnist.batches("train", 100, shuffle=True, augment=True, seed=7)]
    assert len(got) == len(expected) and all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))
    halves = [list(mnist.batches("train", 100, shuffle=True, augment=True, seed=7, shard=Shard(r, 2)))
              for r in (0, 1)]
    for whole, first, second in zip(got, *halves, strict=True):
        assert torch.equal(whole[0::2], first[0]) and torch.equal(whole[1::2], second[0])


def test_uneven_last_batch_is_cut_for_training_and_kept_for_evaluation(mnist):
    n = mnist.num_examples("train")  # 4000 = 3 × 1333 + 1
    train = [len(y) for r in range(3) for _, y in mnist.batches("train", 1333 * 3, shuffle=True, augment=False,
                                                                  seed=1, shard=Shard(r, 3))]
    assert train == [1333, 1333, 1333]  # one image left out so the three ranks take equal steps
    test = sum(len(y) for r in range(3) for _, y in mnist.batches("train", 3 * 7, shuffle=False, augment=False,
                                                                    seed=0, shard=Shard(r, 3, even=False)))
    assert test == n


def test_cli_precision_option_names_another_run(tmp_path):
    runner = CliRunner()
    args = ["train", "-m", "lenet300100", "--epochs", "1", "--batch-size", "500", "--device", "cpu", "--json"]
    plain = runner.invoke(app, [*args, "--out", str(tmp_path / "a")])
    bf16 = runner.invoke(app, [*args, "--precision", "bf16", "--out", str(tmp_path / "b")])
    assert plain.exit_code == 0 and bf16.exit_code == 0, plain.output + bf16.output
    assert json.loads(plain.stdout)["id"] != json.loads(bf16.stdout)["id"]
    assert json.loads((tmp_path / "b" / paths.SPEC).read_text())["spec"]["precision"] == "bf16"
    bad = runner.invoke(app, [*args, "--precision", "fp16", "--out", str(tmp_path / "c")])
    assert bad.exit_code == 2 and "precision must be one of fp32, bf16" in bad.output
    assert not (tmp_path / "c").exists()


def test_gpu_benchmark_runs_every_path_in_its_cpu_smoke(tmp_path):
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_gpu.py"
    env = {**os.environ, "PYTHONPATH": str(script.parents[1]), "CUDA_VISIBLE_DEVICES": ""}  # as on a CPU box
    done = subprocess.run([sys.executable, str(script), "--models", "vgg11", "resnet20"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("no CUDA device: skipped")
    rows = [line.split() for line in done.stdout.splitlines() if line.startswith(("vgg11", "resnet20"))]
    assert len(rows) == 12 and "smoke: ok" in done.stdout  # 2 models × (seed loop + 5 trainer paths)


def test_image_folder_shards_are_the_one_process_batches(tmp_path):
    from datafiles import write_folder

    from prunectl.data import load_imagefolder

    write_folder(tmp_path / "tree")  # 6 small train images: global batch 4 → 4 + 2
    data = load_imagefolder(f"imagefolder:{tmp_path / 'tree'}?workers=0")
    whole = list(data.batches("train", 4, shuffle=True, augment=True, seed=3))
    halves = [list(data.batches("train", 4, shuffle=True, augment=True, seed=3, shard=Shard(r, 2))) for r in (0, 1)]
    assert [len(y) for _, y in whole] == [4, 2] and [[len(y) for _, y in h] for h in halves] == [[2, 1], [2, 1]]
    for (x, y), (x0, y0), (x1, y1) in zip(whole, *halves, strict=True):
        assert torch.equal(x[0::2], x0) and torch.equal(x[1::2], x1) and torch.equal(y[0::2], y0) and torch.equal(y[1::2], y1)
