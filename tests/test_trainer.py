"""Trainer: exact resume after a kill, masks held at zero, slimming's BN penalty, saved initial weights."""

from __future__ import annotations

import json

import pytest
import torch

from prunectl import engine, paths
from prunectl.core.hparams import OptimSpec, ScheduleSpec
from prunectl.core.io import load_tensors
from prunectl.data import load_dataset
from prunectl.methods.slimming import SparsityPenalty
from prunectl.models import create_model
from prunectl.training.hooks import KeepMasks, TrainingBehaviour
from prunectl.training.trainer import Trainer


class Killed(Exception):
    """Stands in for SIGKILL: raised from inside the loop, mid-epoch."""


@pytest.fixture(scope="module")
def mnist():
    return load_dataset("mnist5k")


def _trainer(run_dir, data, behaviours=(), epochs=3, seed=0, model_name="lenet300100", **options):
    torch.manual_seed(seed)
    model = create_model(model_name)
    run_dir.mkdir(parents=True, exist_ok=True)
    return Trainer(model, data, OptimSpec(lr=0.05, batch_size=128), ScheduleSpec(epochs=epochs, milestones=(0.5,)),
                   seed, run_dir, behaviours, device="cpu", **options)


def test_killed_run_resumes_to_bit_identical_weights(tmp_path, mnist):
    straight = _trainer(tmp_path / "a", mnist)
    straight.fit()

    def kill_in_epoch_3(event):
        if event.epoch == 3 and event.batch == 5:
            raise Killed

    victim = _trainer(tmp_path / "b", mnist, progress=kill_in_epoch_3)
    with pytest.raises(Killed):
        victim.fit()
    assert (tmp_path / "b" / paths.CHECKPOINT).is_file()
    assert len((tmp_path / "b" / paths.METRICS).read_text().splitlines()) == 2

    resumed = _trainer(tmp_path / "b", mnist)  # a fresh process would rebuild from scratch, then load
    summary = resumed.fit()
    assert summary["epochs"] == 3
    for (name, a), (_, b) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items(),
                                 strict=True):
        assert torch.equal(a, b), name
    lines = [json.loads(x) for x in (tmp_path / "b" / paths.METRICS).read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2, 3]


def test_masked_weights_stay_zero_through_every_step(tmp_path, mnist):
    torch.manual_seed(0)
    model = create_model("lenet300100")
    weight = dict(model.named_parameters())
    name = next(n for n in weight if n.endswith("weight"))
    mask = (torch.rand_like(weight[name]) > 0.7).float()
    seen = []

    def watch(event):
        if event.batch % 7 == 0:
            w = dict(trainer.model.named_parameters())[name]
            seen.append(int((w.detach()[mask == 0] != 0).sum()))

    trainer = Trainer(model, mnist, OptimSpec(lr=0.1), ScheduleSpec(epochs=1), 0, tmp_path,
                      [KeepMasks({name: mask})], progress=watch, device="cpu")
    trainer.fit()
    final = dict(trainer.model.named_parameters())[name].detach()
    assert seen and all(v == 0 for v in seen)
    assert torch.all(final[mask == 0] == 0)
    assert torch.count_nonzero(final[mask == 1]) > 0.9 * mask.sum()


def test_slimming_penalty_adds_s_sign_gamma_to_bn_grads(tmp_path, mnist):
    penalty = SparsityPenalty(1e-2)
    trainer = _trainer(tmp_path, mnist, [penalty], model_name="smallcnn")
    bn = next(m for m in trainer.model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    with torch.no_grad():
        bn.weight.copy_(torch.linspace(-1, 1, bn.weight.numel()))
    bn.weight.grad = torch.zeros_like(bn.weight)
    penalty.after_backward(trainer.model)
    assert torch.allclose(bn.weight.grad, 1e-2 * torch.sign(bn.weight.detach()))


def test_save_init_keeps_the_weights_before_the_first_step(tmp_path, mnist):
    trainer = _trainer(tmp_path, mnist, save_init=True, epochs=1)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.fit()
    saved = load_tensors(tmp_path / paths.INIT)
    assert set(saved) == set(before)
    assert all(torch.equal(saved[k], before[k]) for k in before)
    after = trainer.model.state_dict()
    assert any(not torch.equal(after[k], before[k]) for k in before)  # training moved on from the saved init


def test_epoch_hook_runs_once_per_epoch_before_evaluation(tmp_path, mnist):
    calls = []

    class AtEpochEnd(TrainingBehaviour):
        def on_epoch_end(self, model, epoch, epochs):
            calls.append((epoch, len(json_lines(tmp_path / paths.METRICS))))

    trainer = _trainer(tmp_path, mnist, [AtEpochEnd()], epochs=2)
    trainer.fit()
    assert calls == [(0, 0), (1, 1)]  # epoch k's hook ran before epoch k was evaluated and recorded


def json_lines(path):
    return path.read_text().splitlines() if path.is_file() else []


def test_train_stage_writes_its_artefacts_and_is_reused(tmp_path):
    spec = engine.baseline_spec("lenet300100", "mnist5k", epochs=1, seed=3)
    run = engine.train(spec, out=tmp_path / "run")
    for name in (paths.SPEC, paths.ARCH, paths.MODEL, paths.METRICS, paths.RESULT):
        assert run.has(name), name
    assert not run.has(paths.CHECKPOINT)
    result = run.result()
    assert result["seed"] == 3 and result["epochs"] == 1 and 0 <= result["final_acc"] <= 100
    assert result["params"] == 266610 and result["flops"] == 266200
    assert engine.open_run(run.path).spec() == spec
    mtime = run.file(paths.MODEL).stat().st_mtime_ns
    again = engine.train(spec, out=tmp_path / "run")
    assert again.file(paths.MODEL).stat().st_mtime_ns == mtime
