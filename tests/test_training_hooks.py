"""Training behaviours: the trainer applies a behaviour's parameter groups and calls its hooks at the documented
points, its state survives a checkpoint (bit-identical resume), and methods reach it through the spec, the
engine, recipes and `train --method NAME --set KEY=VALUE`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from typer.testing import CliRunner

from prunectl import paths
from prunectl.cli.app import app
from prunectl.core.hparams import MethodTraining, OptimSpec, ScheduleSpec, TrainSpec, slimming_training
from prunectl.core.io import load_tensors
from prunectl.core.spec import spec_from_record
from prunectl.data import load_dataset
from prunectl.engine.recipe import Recipe
from prunectl.engine.train import baseline_spec, behaviours_for, method_training
from prunectl.errors import ArtifactError, BadValueError, UnknownNameError
from prunectl.methods import PruneContext, get_method
from prunectl.methods.slimming import SlimmingSettings, SparsityPenalty
from prunectl.models import create_model, default_arch
from prunectl.training.hooks import KeepMasks, ParamGroup, TrainingBehaviour
from prunectl.training.trainer import Trainer

EPOCHS = 3
LR = 0.05


class Killed(Exception):
    """Stands in for SIGKILL: raised from inside the loop, mid-epoch."""


@pytest.fixture(scope="module")
def mnist():
    return load_dataset("mnist5k")


def _trainer(run_dir, data, behaviours, epochs=EPOCHS, weight_decay=1e-4, **options):
    torch.manual_seed(0)
    model = create_model("lenet300100")
    run_dir.mkdir(parents=True, exist_ok=True)
    optim = OptimSpec(lr=LR, batch_size=256, weight_decay=weight_decay)
    return Trainer(model, data, optim, ScheduleSpec(epochs=epochs, milestones=(0.5,)), 0, run_dir, behaviours,
                   device="cpu", **options)


class Recorder(TrainingBehaviour):
    """Counts the calls of every hook; remembers the lr of each step and the epochs that ended."""

    def __init__(self) -> None:
        self.starts = 0
        self.backwards = 0
        self.step_lrs: list[float] = []
        self.epochs: list[tuple[int, int]] = []

    def on_train_start(self, model):
        self.starts += 1

    def after_backward(self, model):
        assert all(p.grad is not None for p in model.parameters())  # called between backward and step
        self.backwards += 1

    def after_step(self, model, lr):
        self.step_lrs.append(lr)

    def on_epoch_end(self, model, epoch, epochs):
        self.epochs.append((epoch, epochs))


class BlockScales(TrainingBehaviour):
    """A Sparse-Structure-Selection-like toy: scales λ it owns multiply the first layer's outputs; they sit in a
    group without weight decay at a tenth of the lr, and a proximal soft-threshold step after each optimiser
    step pulls them towards zero, clamped at zero."""

    def __init__(self, threshold: float = 0.05) -> None:
        self.threshold = threshold
        self.scale: nn.Parameter | None = None

    def param_groups(self, model):
        first = model.classifier.fc1
        self.scale = nn.Parameter(torch.ones(first.out_features, device=first.weight.device))
        first.register_forward_hook(lambda module, inputs, output: output * self.scale)
        return [ParamGroup([self.scale], name="block-scales", weight_decay=0.0, lr_scale=0.1)]

    def after_step(self, model, lr):
        with torch.no_grad():
            self.scale.sub_(lr * 0.1 * self.threshold).clamp_(min=0.0)

    def state_dict(self):
        return {"scale": self.scale.detach()}

    def load_state_dict(self, state):
        with torch.no_grad():
            self.scale.copy_(state["scale"])


class RenewedMask(TrainingBehaviour):
    """A Soft-Filter-Pruning-like toy: zero the lowest-L2 rows of the second layer at the start, after every
    `interval` epochs and after the last, and keep them zero after every step; the mask and a counter of
    renewals are its state."""

    def __init__(self, interval: int = 2) -> None:
        self.interval = interval
        self.mask: torch.Tensor | None = None
        self.renewals = torch.zeros((), dtype=torch.int64)

    def _renew(self, model):
        weight = model.classifier.fc2.weight
        norms = weight.detach().norm(dim=1)
        keep = torch.argsort(norms, descending=True)[: int(0.7 * len(norms))]
        self.mask = torch.zeros_like(norms).index_fill_(0, keep, 1.0)
        self.renewals += 1
        self._apply(model)

    def _apply(self, model):
        with torch.no_grad():
            model.classifier.fc2.weight.mul_(self.mask[:, None])

    def on_train_start(self, model):
        self._renew(model)

    def after_step(self, model, lr):
        self._apply(model)

    def on_epoch_end(self, model, epoch, epochs):
        if (epoch + 1) % self.interval == 0 or epoch + 1 == epochs:
            self._renew(model)

    def state_dict(self):
        return {"mask": self.mask, "renewals": self.renewals}

    def load_state_dict(self, state):
        self.mask, self.renewals = state["mask"], state["renewals"].clone()


def test_hooks_run_at_their_points_with_the_scheduled_lr(tmp_path, mnist):
    recorder = Recorder()
    trainer = _trainer(tmp_path, mnist, [recorder], epochs=2)
    trainer.fit()
    steps = len(recorder.step_lrs)
    assert recorder.starts == 1 and recorder.backwards == steps > 0
    assert recorder.epochs == [(0, 2), (1, 2)]
    half = steps // 2  # two epochs of equal length, the lr drops ×0.1 at the milestone after the first
    assert recorder.step_lrs[:half] == [LR] * half
    assert recorder.step_lrs[half:] == [pytest.approx(LR * 0.1)] * half


def test_a_group_without_weight_decay_keeps_a_zero_grad_parameter_while_the_default_group_decays(tmp_path, mnist):
    class NoDecayBias(TrainingBehaviour):
        def param_groups(self, model):
            return [ParamGroup([model.classifier.fc1.bias], name="no-decay", weight_decay=0.0, lr_scale=0.5)]

        def after_backward(self, model):
            for p in model.parameters():
                p.grad.zero_()  # only weight decay can move anything now

    trainer = _trainer(tmp_path, mnist, [NoDecayBias()], epochs=1, weight_decay=1e-2)
    with torch.no_grad():
        trainer.model.classifier.fc1.bias.fill_(0.5)
        trainer.model.classifier.fc2.bias.fill_(0.5)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.fit()
    after = trainer.model.state_dict()
    assert torch.equal(after["classifier.fc1.bias"], before["classifier.fc1.bias"])
    assert torch.all(after["classifier.fc2.bias"] < before["classifier.fc2.bias"])  # decayed towards zero
    assert torch.all(after["classifier.fc1.weight"].abs() <= before["classifier.fc1.weight"].abs())
    groups = trainer.optimizer.param_groups
    assert [g["name"] for g in groups] == ["default", "no-decay"]
    assert groups[1]["weight_decay"] == 0.0 and groups[0]["weight_decay"] == 1e-2
    assert groups[0]["lr"] == trainer.schedule.lr_at(0, LR) and groups[1]["lr"] == 0.5 * groups[0]["lr"]
    assert sum(len(g["params"]) for g in groups) == len(list(trainer.model.parameters()))


def test_a_parameter_in_two_groups_is_a_one_line_error(tmp_path, mnist):
    class Greedy(TrainingBehaviour):
        def param_groups(self, model):
            return [ParamGroup([model.classifier.fc1.bias], name="a"), ParamGroup([model.classifier.fc1.bias], name="b")]

    with pytest.raises(BadValueError, match="group 'b' takes a parameter that group 'a' already has"):
        _trainer(tmp_path, mnist, [Greedy()])


def _kill_in_epoch_3(event):
    if event.epoch == 3 and event.batch == 5:
        raise Killed


def test_stateful_behaviours_resume_bit_identically_and_start_only_once(tmp_path, mnist):
    def behaviours():
        return [BlockScales(), RenewedMask(), Recorder()]

    straight_b = behaviours()
    straight = _trainer(tmp_path / "a", mnist, straight_b)
    straight.fit()
    assert EPOCHS == 3 and int(straight_b[1].renewals) == 3  # at the start, after epoch 2, after the last
    assert straight_b[0].scale.min() >= 0 and straight_b[0].scale.max() < 1  # the proximal step acted

    victim_b = behaviours()
    with pytest.raises(Killed):
        _trainer(tmp_path / "b", mnist, victim_b, progress=_kill_in_epoch_3).fit()
    ckpt = tmp_path / "b" / paths.CHECKPOINT
    assert {"behaviour.0.scale", "behaviour.1.mask", "behaviour.1.renewals"} <= set(load_tensors(ckpt))

    resumed_b = behaviours()
    resumed = _trainer(tmp_path / "b", mnist, resumed_b)
    resumed.fit()
    assert victim_b[2].starts == 1 and resumed_b[2].starts == 0  # not started again on resume
    assert resumed_b[2].epochs == [(2, EPOCHS)]
    assert int(resumed_b[1].renewals) == int(straight_b[1].renewals)
    assert torch.equal(resumed_b[0].scale, straight_b[0].scale)
    for (name, a), (_, b) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items(),
                                 strict=True):
        assert torch.equal(a, b), name
    strip = [{k: v for k, v in g.items() if k != "params"} for g in straight.optimizer.param_groups]
    assert strip == [{k: v for k, v in g.items() if k != "params"} for g in resumed.optimizer.param_groups]


def test_a_checkpoint_from_before_behaviours_still_resumes(tmp_path, mnist):
    """A plain run's checkpoint as the old trainer wrote it: no behaviour keys, groups without name / lr_scale."""
    straight = _trainer(tmp_path / "a", mnist, [])
    straight.fit()
    with pytest.raises(Killed):
        _trainer(tmp_path / "b", mnist, [], progress=_kill_in_epoch_3).fit()
    ckpt = tmp_path / "b" / paths.CHECKPOINT
    with safe_open(str(ckpt), framework="pt") as f:
        meta = dict(f.metadata())
    groups = [{k: v for k, v in g.items() if k not in ("name", "lr_scale")} for g in json.loads(meta["param_groups"])]
    old_meta = {"epoch": meta["epoch"], "wall_seconds": meta["wall_seconds"], "history": meta["history"],
                "param_groups": json.dumps(groups)}
    save_file(load_tensors(ckpt), str(ckpt), metadata=old_meta)
    resumed = _trainer(tmp_path / "b", mnist, [])
    resumed.fit()
    assert all(torch.equal(a, b) for a, b in zip(straight.model.state_dict().values(),
                                                 resumed.model.state_dict().values(), strict=True))


def test_resuming_with_other_behaviours_is_a_one_line_error(tmp_path, mnist):
    with pytest.raises(Killed):
        _trainer(tmp_path, mnist, [RenewedMask()], progress=_kill_in_epoch_3).fit()
    with pytest.raises(ArtifactError, match="written with training behaviours") as err:
        _trainer(tmp_path, mnist, [Recorder()]).fit()
    assert "\n" not in str(err.value)


def test_keep_masks_holds_weights_and_grads_at_zero(tmp_path, mnist):
    torch.manual_seed(1)
    mask = (torch.rand(300, 784) > 0.5).float()
    trainer = _trainer(tmp_path, mnist, [KeepMasks({"classifier.fc1.weight": mask})], epochs=1)
    trainer.fit()
    weight = trainer.model.classifier.fc1.weight
    assert torch.all(weight.detach()[mask == 0] == 0)
    momentum = trainer.optimizer.state[weight]["momentum_buffer"]
    assert torch.all(momentum[mask == 0] == 0)  # the grad was masked too, so no momentum built up


# -- the spec ---------------------------------------------------------------------------------------------------
def _spec(**kw) -> TrainSpec:
    return TrainSpec(arch=default_arch("lenet300100"), dataset="mnist5k", **kw)


def test_slimming_training_is_written_as_the_legacy_sparsity_and_round_trips_through_spec_json():
    spec = _spec(training=slimming_training(1e-4))
    record = {"kind": "TrainSpec", "spec": spec.to_dict()}
    assert record["spec"]["sparsity"] == 1e-4 and "training" not in record["spec"]
    again = spec_from_record(json.loads(json.dumps(record)))
    assert again == spec and again.spec_hash() == spec.spec_hash()
    assert again.training == MethodTraining("slimming", {"sparsity": 1e-4})
    assert json.loads(spec.canonical_json())["spec"]["sparsity"] == 1e-4


def test_other_methods_training_appears_under_the_training_field():
    spec = _spec(training=MethodTraining("soft-filter", {"rate": 0.3, "interval": 1}))
    canonical = json.loads(spec.canonical_json())["spec"]
    assert canonical["training"] == {"method": "soft-filter", "settings": {"interval": 1, "rate": 0.3}}
    assert "sparsity" not in canonical
    again = spec_from_record(json.loads(json.dumps({"kind": "TrainSpec", "spec": spec.to_dict()})))
    assert again == spec and again.spec_hash() == spec.spec_hash() != _spec().spec_hash()


def test_a_record_with_both_sparsity_and_training_is_refused():
    data = {**_spec(training=MethodTraining("x", {})).to_dict(), "sparsity": 1e-4}
    with pytest.raises(ArtifactError, match="both"):
        TrainSpec.from_dict(data)


def test_the_shortcut_and_the_method_give_one_spec():
    by_shortcut = baseline_spec("smallcnn", "mnist5k", epochs=2, sparsity=1e-4)
    by_method = baseline_spec("smallcnn", "mnist5k", epochs=2, training=MethodTraining("slimming", {"sparsity": 1e-4}))
    integer = baseline_spec("smallcnn", "mnist5k", training=MethodTraining("slimming", {"sparsity": 1}))
    assert by_shortcut == by_method and by_shortcut.spec_hash() == by_method.spec_hash()
    assert integer.training == slimming_training(1.0)
    assert baseline_spec("smallcnn", "mnist5k", sparsity=0.0).training is None


@pytest.mark.parametrize(
    "name, settings, error, message",
    [
        ("slimming", {"sparsty": 1e-4}, BadValueError, r"has no setting 'sparsty' \(its settings: sparsity\)"),
        ("slimming", {"sparsity": "lots"}, BadValueError, "'sparsity' must be a number"),
        ("slimming", {"sparsity": -1e-4}, BadValueError, "sparsity must be a finite number > 0"),
        ("slimming", {"sparsity": float("inf")}, BadValueError, "finite"),
        ("slimming", {}, BadValueError, r"training of method 'slimming' needs 'sparsity' \(e.g. --set sparsity=VALUE\)"),
        ("l1-norm", {}, BadValueError, "method 'l1-norm' does not act during training"),
        ("slimmin", {}, UnknownNameError, "did you mean 'slimming'"),
    ],
)
def test_bad_method_training_is_a_one_line_error(name, settings, error, message):
    with pytest.raises(error, match=message) as err:
        method_training(name, settings)
    assert "\n" not in str(err.value)


def test_the_base_method_does_not_act_during_training():
    method = get_method("weight")
    assert method.training_settings is None
    with pytest.raises(BadValueError, match="method 'weight' does not act during training"):
        method.training(None, create_model("lenet300100"))


def test_the_engine_gives_the_method_behaviour_then_the_mask():
    model = create_model("smallcnn")
    spec = baseline_spec("smallcnn", "mnist5k", sparsity=1e-4)
    behaviours = behaviours_for(spec, model, {"features.0.weight": torch.ones(16, 1, 3, 3)})
    assert [type(b) for b in behaviours] == [SparsityPenalty, KeepMasks]
    assert behaviours[0].sparsity == 1e-4
    assert behaviours_for(baseline_spec("smallcnn", "mnist5k"), model) == []


def test_slimming_warns_unless_the_baseline_trained_with_its_penalty():
    def notes_for(training):
        notes: list[str] = []
        get_method("slimming").prune(create_model("smallcnn"), SlimmingSettings(ratio=0.5),
                                     PruneContext(training=training, note=notes.append))
        return [n for n in notes if n.startswith("warning")]

    assert notes_for(None) and notes_for(MethodTraining("soft-filter", {"rate": 0.3}))
    assert not notes_for(slimming_training(1e-4))


# -- recipes ----------------------------------------------------------------------------------------------------
def _recipe(baseline) -> Recipe:
    return Recipe.from_dict({"name": "t", "dataset": "mnist5k", "model": "smallcnn", "baseline": baseline,
                             "prune": {"method": "slimming", "ratio": 0.5}})


def test_a_recipe_names_a_training_method_or_uses_the_sparsity_shortcut():
    table = _recipe({"epochs": 2, "training": {"method": "slimming", "sparsity": 1e-4}})
    shortcut = _recipe({"epochs": 2, "sparsity": 1e-4})
    assert table.baseline_training() == slimming_training(1e-4)
    assert table.baseline_spec(seed=0) == shortcut.baseline_spec(seed=0)
    assert table.baseline_spec(seed=0).spec_hash() == "7627950df142"  # tests/test_run_ids.py's SLIMMING_ID
    assert _recipe({"epochs": 2}).baseline_spec(seed=0).training is None
    with pytest.raises(BadValueError, match=r"no setting 'rate' \(its settings: sparsity\)"):
        _recipe({"training": {"method": "slimming", "rate": 0.5}})
    with pytest.raises(BadValueError, match=r"\[baseline.training\] needs method"):
        _recipe({"training": {"sparsity": 1e-4}})


# -- the CLI ----------------------------------------------------------------------------------------------------
def test_train_method_set_and_the_sparsity_shortcut_give_the_same_run_id():
    runner = CliRunner()
    common = ["train", "-m", "lenet5", "--epochs", "1", "--json"]
    by_method = runner.invoke(app, [*common, "--method", "slimming", "--set", "sparsity=1e-4"])
    assert by_method.exit_code == 0, by_method.output
    by_shortcut = runner.invoke(app, [*common, "--sparsity", "1e-4"])
    assert by_shortcut.exit_code == 0, by_shortcut.output
    first, second = json.loads(by_method.stdout), json.loads(by_shortcut.stdout)
    assert first["id"] == second["id"] == baseline_spec("lenet5", "mnist5k", epochs=1, sparsity=1e-4).spec_hash()
    assert second["run"] == first["run"]  # the shortcut found the finished run in the store
    record = json.loads((Path(first["run"]) / paths.SPEC).read_text())
    assert record["spec"]["sparsity"] == 1e-4


@pytest.mark.parametrize(
    "args, message",
    [
        (["--method", "slimming", "--set", "sparsty=1e-4"], "training of method 'slimming' has no setting 'sparsty' "
                                                            "(its settings: sparsity)"),
        (["--set", "sparsity=1e-4"], "name it with --method"),
        (["--method", "l1-norm"], "method 'l1-norm' does not act during training"),
        (["--method", "slimming", "--set", "sparsity=1e-4", "--sparsity", "1e-4"], "not both"),
    ],
)
def test_train_method_errors_are_one_line_with_exit_2(tmp_path, args, message):
    result = CliRunner().invoke(app, ["train", "-m", "lenet5", "--epochs", "1", "--out", str(tmp_path / "r"), *args])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0]
    assert not (tmp_path / "r").exists()  # nothing written
