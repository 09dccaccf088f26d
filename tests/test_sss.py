"""Sparse Structure Selection: the APG proximal step on the branch scales (exact zeros, λ ≥ 0, no weight decay, a
hand-computed trace), lossless removal of the zero branches with λ folded in, a strong γ removing blocks on a tiny
ResNet, bad inputs, exact resume, and the per-stage notation of `info`."""

from __future__ import annotations

import json

import pytest
import torch
from tinymodels import randomised, tiny_dataset
from typer.testing import CliRunner

from prunectl import paths
from prunectl.cli.app import app
from prunectl.core.hparams import MethodTraining, OptimSpec, ScheduleSpec, TrainSpec
from prunectl.engine.info import info
from prunectl.engine.prune import prune, prune_spec
from prunectl.engine.train import behaviours_for, method_training, train
from prunectl.engine.zoo import zoo_arch
from prunectl.errors import BadValueError
from prunectl.methods import PruneContext, get_method
from prunectl.methods.sss import BranchScales, SSSSettings, SSSTraining, layout_notation, stage_layout
from prunectl.models import Arch, build_model, create_model, default_arch
from prunectl.structure import PROVIDERS, block_groups
from prunectl.training.trainer import Trainer, build_optimizer

SSS = get_method("sss")
TRAINED = MethodTraining("sss", {})
TINY = Arch("cifar_resnet", {"depth": 14, "stage_widths": [4, 8, 8]}, 5, (3, 8, 8))


def _behaviour(model, lr=0.5, weight_decay=0.0, **settings):
    behaviour = SSS.training(SSSTraining(**settings), model)
    optimizer = build_optimizer(model, OptimSpec(lr=lr, momentum=0.9, weight_decay=weight_decay, nesterov=True),
                                [behaviour])
    return behaviour, optimizer


def _step(model, behaviour, optimizer, grad, lr, zero_grad_on=()):
    """One trainer step with a given gradient on λ (none on the weights, but a zero one on `zero_grad_on`)."""
    optimizer.zero_grad(set_to_none=True)
    behaviour.scales.grad = grad.clone()
    for param in zero_grad_on:
        param.grad = torch.zeros_like(param)
    behaviour.after_backward(model)
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_scale"]
    optimizer.step()
    behaviour.after_step(model, lr)
    return behaviour.scales.detach().clone()


# -- the proximal step ------------------------------------------------------------------------------------------
def test_the_proximal_step_reaches_exactly_zero_and_stays_there():
    model = build_model(TINY)
    behaviour, optimizer = _behaviour(model, gamma=0.5, momentum=0.0)
    zero = torch.zeros(len(behaviour.blocks))
    trace = [_step(model, behaviour, optimizer, zero, lr=0.5)[0].item() for _ in range(12)]
    # λ_t = max(0, λ_{t-1} − lr·γ) with lr·γ = 0.25: ⌈1 / 0.25⌉ = 4 steps to 0.0, then 0.0 for good
    assert trace[:4] == [0.75, 0.5, 0.25, 0.0] and all(v == 0.0 for v in trace[4:])


def test_scales_stay_non_negative_under_random_gradients():
    model = build_model(TINY)
    behaviour, optimizer = _behaviour(model, gamma=0.2, momentum=0.9)
    gen = torch.Generator().manual_seed(0)
    zeros = 0
    for _ in range(200):
        scales = _step(model, behaviour, optimizer, torch.randn(len(behaviour.blocks), generator=gen), lr=0.1)
        assert torch.all(scales >= 0)
        zeros += int((scales == 0).sum())
    assert zeros > 0  # the clamp acted (otherwise the test would prove nothing)


def test_the_apg_update_matches_a_hand_computed_three_step_trace():
    # lr 0.1, γ 0.5 (threshold 0.05), μ 0.9, λ₀ = (1, 0.3); gradients g₁ = (1, 2), g₂ = (−1, 0.5), g₃ = (0.5, −1).
    # z = S(λ − lr·g, 0.05); v = μ·v + z − λ; λ = max(z + μ·v, 0)
    # step 1: z = (0.85, 0.05);  v = (−0.15, −0.25);   λ = (0.715, 0)
    # step 2: z = (0.765, 0);    v = (−0.085, −0.225); λ = (0.6885, 0)     (0.765 − 0.0765, −0.2025 clamped)
    # step 3: z = (0.5885, 0.05); v = (−0.1765, −0.1525); λ = (0.42965, 0) (0.05 − 0.13725 clamped)
    model = build_model(TINY)
    behaviour, optimizer = _behaviour(model, gamma=0.5, momentum=0.9)
    with torch.no_grad():
        behaviour.scales.fill_(0)[:2] = torch.tensor([1.0, 0.3])
    grads = [(1.0, 2.0), (-1.0, 0.5), (0.5, -1.0)]
    expected = [(0.715, 0.0), (0.6885, 0.0), (0.42965, 0.0)]
    velocity = [(-0.15, -0.25), (-0.085, -0.225), (-0.1765, -0.1525)]
    for g, want, v in zip(grads, expected, velocity, strict=True):
        grad = torch.zeros(len(behaviour.blocks))
        grad[:2] = torch.tensor(g)
        got = _step(model, behaviour, optimizer, grad, lr=0.1)
        assert got[:2].tolist() == pytest.approx(want, abs=1e-6)
        assert behaviour.velocity[:2].tolist() == pytest.approx(v, abs=1e-6)


def test_gamma_zero_is_plain_accelerated_gradient():
    # z = λ − lr·g; v = z − λ + μ·v; λ = z + μ·v  (λ₀ = 1, lr 0.1, μ 0.5, g = 1, 1, 1)
    # step 1: z = 0.9, v = −0.1, λ = 0.85; step 2: z = 0.75, v = −0.15, λ = 0.675; step 3: z = 0.575,
    # v = −0.175, λ = 0.4875
    model = build_model(TINY)
    behaviour, optimizer = _behaviour(model, gamma=0.0, momentum=0.5)
    ones = torch.ones(len(behaviour.blocks))
    trace = [_step(model, behaviour, optimizer, ones, lr=0.1)[0].item() for _ in range(3)]
    assert trace == pytest.approx([0.85, 0.675, 0.4875], abs=1e-6)


def test_no_weight_decay_reaches_the_scales():
    model = build_model(TINY)
    behaviour, optimizer = _behaviour(model, weight_decay=0.1, gamma=0.0, momentum=0.0)
    group = optimizer.param_groups[1]
    assert group["name"] == "sss-scales" and group["weight_decay"] == 0.0 and group["momentum"] == 0.0
    conv = model.conv1.weight
    before = conv.detach().clone()
    for _ in range(5):
        scales = _step(model, behaviour, optimizer, torch.zeros(len(behaviour.blocks)), lr=0.5, zero_grad_on=[conv])
    assert torch.equal(scales, torch.ones_like(scales))  # γ = 0, ∇ = 0, μ = 0: only weight decay could move λ
    assert torch.all(conv.detach().abs() < before.abs())  # ... and it does move the ordinary weights


def test_lr_scale_multiplies_the_gradient_step_and_the_threshold():
    model = build_model(TINY)
    behaviour, optimizer = _behaviour(model, gamma=0.5, momentum=0.0, lr_scale=0.5)
    assert optimizer.param_groups[1]["lr_scale"] == 0.5
    grad = torch.full((len(behaviour.blocks),), 0.2)
    got = _step(model, behaviour, optimizer, grad, lr=0.4)  # lr 0.2: z = 1 − 0.04 = 0.96, threshold 0.1
    assert got[0].item() == pytest.approx(0.86, abs=1e-6)


# -- removal ----------------------------------------------------------------------------------------------------
RESIDUAL = [(f"{family}-{label}", arch) for family in ("cifar_resnet", "imagenet_resnet", "preresnet")
            for label, arch in PROVIDERS.get(family).examples().items()]


def _trained_like(model, zero, seed=0):
    """`model` as SSS training leaves it: random λ (those of the blocks in `zero` exactly 0) applied through the
    behaviour's hooks; returns the behaviour (call `fold` to end the training)."""
    behaviour = SSS.training(SSSTraining(), model)
    behaviour.param_groups(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        behaviour.scales.copy_(torch.rand(len(behaviour.blocks), generator=gen) + 0.2)
        for i, block in enumerate(behaviour.blocks):
            if block.name in zero:
                behaviour.scales[i] = 0.0
    return behaviour


@pytest.mark.parametrize("arch", [a for _, a in RESIDUAL], ids=[k for k, _ in RESIDUAL])
def test_removing_the_zero_branches_with_lambda_folded_is_lossless(arch):
    model = randomised(arch)
    names = [b.name for b in block_groups(model)]
    zero = set(names[1::2])  # every other branch, first blocks of stages among them
    behaviour = _trained_like(model, zero)
    x = torch.randn(6, *arch.input_size)
    with torch.no_grad():
        scaled = model(x)  # the λ-scaled network
        behaviour.on_epoch_end(model, 0, 1)  # the last epoch ends: λ folded, hooks gone
        assert not behaviour._hooks and torch.allclose(model(x), scaled, atol=1e-5)
        out = SSS.prune(model, SSSSettings(), PruneContext(training=TRAINED))
        pruned = out.model.eval()
        assert torch.allclose(pruned(x), scaled, atol=1e-5)
    assert set(out.edit.drop) == zero and out.report["removed"] == sorted(zero, key=names.index)
    assert [b.name for b in block_groups(pruned)] == [n for n in names if n not in zero]
    rebuilt = build_model(pruned.to_arch())
    rebuilt.load_state_dict(pruned.state_dict(), strict=True)
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())


def test_a_first_block_keeps_its_projection_and_a_stage_may_lose_every_branch():
    two = [{"mid": [2, 2]}, {"mid": [2, 2]}]  # a ResNet-50 in miniature: stage 1 widens 8 -> 16 by a projection
    model = randomised(Arch("imagenet_resnet", {"block": "bottleneck", "stem_width": 8, "stage_widths": [4, 4, 4, 4],
                                                "blocks": [two, two, two, two]}, 5, (3, 32, 32)))
    stage1 = {b.name for b in block_groups(model) if b.stage == 0}
    _trained_like(model, stage1).on_epoch_end(model, 0, 1)
    notes: list[str] = []
    out = SSS.prune(model, SSSSettings(), PruneContext(training=TRAINED, note=notes.append))
    assert out.report["notation"].startswith("[(0, False), ") and not out.report["held_for_stage"]
    assert out.model.get_submodule("layer1.0.downsample") is not None  # the projection stays
    assert not any("vanish" in n for n in notes)


def test_a_stage_of_identities_only_keeps_its_first_block_and_says_so():
    model = randomised(TINY)
    stage1 = [b.name for b in block_groups(model) if b.stage == 0]
    _trained_like(model, set(stage1)).on_epoch_end(model, 0, 1)
    notes: list[str] = []
    out = SSS.prune(model, SSSSettings(), PruneContext(training=TRAINED, note=notes.append))
    assert out.report["held_for_stage"] == [stage1[0]] and out.edit.drop == tuple(stage1[1:])
    assert out.report["stages"][0] == {"stage": 1, "blocks": 2, "kept": 1, "first_kept": True}
    assert len(notes) == 1 and "stage 1" in notes[0] and "vanish" in notes[0]


def test_a_strong_gamma_on_a_tiny_resnet_zeroes_and_removes_a_block(tmp_path):
    torch.manual_seed(0)
    model = build_model(TINY)
    behaviour = SSS.training(SSSTraining(gamma=1.0), model)  # lr·γ = 0.1 per step
    trainer = Trainer(model, tiny_dataset(TINY, count=64), OptimSpec(lr=0.1, batch_size=16),
                      ScheduleSpec(epochs=10, milestones=()), 0, tmp_path, [behaviour], device="cpu", augment=False)
    trainer.fit()  # 40 steps
    assert (behaviour.scales == 0.0).any()  # exactly 0.0, not merely small
    out = SSS.prune(model, SSSSettings(), PruneContext(training=TRAINED))
    assert len(out.edit.drop) >= 1
    assert out.report["blocks_kept"] == out.report["blocks_before"] - len(out.edit.drop)


# -- bad inputs -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("settings, message", [
    ({"gamma": -0.01}, "gamma must be a finite number >= 0"),
    ({"gamma": float("inf")}, "gamma must be a finite number >= 0"),
    ({"lr_scale": 0}, "lr_scale must be a finite number > 0"),
    ({"momentum": 1.0}, r"momentum must be in \[0, 1\)"),
])
def test_bad_training_settings_are_one_line_errors(settings, message):
    with pytest.raises(BadValueError, match=message) as err:
        method_training("sss", settings)
    assert "\n" not in str(err.value)


def test_a_family_without_removable_blocks_is_refused_in_training_and_pruning():
    with pytest.raises(BadValueError, match="sss needs removable-blocks"):
        SSS.training(SSSTraining(), create_model("smallcnn"))
    with pytest.raises(BadValueError, match="sss needs removable-blocks"):
        SSS.prune(create_model("smallcnn"), SSSSettings(), PruneContext(training=TRAINED))


@pytest.mark.parametrize("training, how", [(None, "without a training method"),
                                           (MethodTraining("slimming", {"sparsity": 1e-4}), "with 'slimming'")])
def test_a_run_not_trained_with_sss_is_refused(training, how):
    with pytest.raises(BadValueError, match=how):
        SSS.prune(randomised(TINY), SSSSettings(), PruneContext(training=training))


def _cli_one_line_error(result, message):
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], lines


@pytest.mark.parametrize("args, message", [
    (["-m", "resnet20", "--set", "gamma=-1"], "gamma must be a finite number >= 0"),
    (["-m", "smallcnn"], "sss needs removable-blocks"),
])
def test_train_refuses_in_one_line_and_writes_nothing(tmp_path, args, message):
    out = tmp_path / "r"
    result = CliRunner().invoke(app, ["train", *args, "--method", "sss", "--epochs", "1", "--out", str(out)])
    _cli_one_line_error(result, message)
    assert not out.exists()


def _tiny_spec(training: MethodTraining | None, epochs: int = 2) -> TrainSpec:
    arch = Arch("cifar_resnet", {"depth": 14, "stage_widths": [4, 8, 8]}, 10, (1, 28, 28))
    return TrainSpec(arch=arch, dataset="mnist5k", optim=OptimSpec(lr=0.1, batch_size=256),
                     schedule=ScheduleSpec(epochs=epochs), training=training)


def test_prune_refuses_a_plain_run_in_one_line_and_writes_nothing(tmp_path):
    base = train(_tiny_spec(None, epochs=1), out=tmp_path / "base", device="cpu")
    out = tmp_path / "pruned"
    result = CliRunner().invoke(app, ["prune", str(base.path), "--method", "sss", "--out", str(out)])
    _cli_one_line_error(result, "this run was trained without a training method")
    assert not out.exists()


# -- the whole pipeline and exact resume -------------------------------------------------------------------------
def test_train_prune_info_with_a_strong_gamma(tmp_path):
    spec = _tiny_spec(method_training("sss", {"gamma": 1.0}))
    base = train(spec, out=tmp_path / "base", device="cpu")
    assert not (base.path / paths.CHECKPOINT).exists()
    model = base.model()  # the saved model loads strictly into the plain family: λ was folded into it
    pruned = prune(base, prune_spec(base, "sss", {}), out=tmp_path / "pruned", device="cpu")
    result = pruned.result()
    report = result["report"]
    assert report["removed"] and result["flops"] < result["flops_before"] and result["params"] < result["params_before"]
    assert result["pruned_acc"] == pytest.approx(base.result()["final_acc"], abs=0.1)  # removal is lossless
    shown = info(str(pruned.path))["blocks"]
    assert shown["notation"] == report["notation"] == layout_notation(stage_layout(pruned.model()))
    assert sum(s["kept"] for s in shown["stages"]) == len(block_groups(model)) - len(report["removed"])


class Killed(Exception):
    """Stands in for SIGKILL: raised from inside the loop, mid-epoch."""


def _kill_in_epoch_2(event):
    if event.epoch == 2 and event.batch == 3:
        raise Killed


def _sss_trainer(run_dir, progress=None):
    torch.manual_seed(0)
    model = build_model(TINY)
    run_dir.mkdir(parents=True, exist_ok=True)
    behaviour = SSS.training(SSSTraining(gamma=0.3), model)
    trainer = Trainer(model, tiny_dataset(TINY, count=96), OptimSpec(lr=0.1, batch_size=16),
                      ScheduleSpec(epochs=3, milestones=(0.5,)), 0, run_dir, [behaviour], device="cpu",
                      progress=progress)
    return trainer, behaviour


def test_a_run_killed_during_sss_training_resumes_bit_identically(tmp_path):
    straight, straight_b = _sss_trainer(tmp_path / "a")
    straight.fit()
    with pytest.raises(Killed):
        _sss_trainer(tmp_path / "b", _kill_in_epoch_2)[0].fit()
    resumed, resumed_b = _sss_trainer(tmp_path / "b")
    resumed.fit()
    assert torch.equal(resumed_b.scales, straight_b.scales) and torch.equal(resumed_b.velocity, straight_b.velocity)
    for (name, a), (_, b) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items(),
                                 strict=True):
        assert torch.equal(a, b), name
    # a rerun that finds the last checkpoint (folded) trains nothing more and leaves the model unhooked
    again, again_b = _sss_trainer(tmp_path / "a")
    again.fit()
    assert again_b.folded and not again_b._hooks
    x = torch.randn(4, *TINY.input_size)
    straight.model.eval(), again.model.eval()
    with torch.no_grad():
        assert torch.equal(again.model(x), straight.model(x))


def test_the_stage_notation_is_the_zoos_for_the_sss_resnets():
    for name in ("sss-resnet26-imagenet", "sss-resnet32-imagenet", "sss-resnet41-imagenet", "resnet50"):
        arch = zoo_arch(f"zoo:{name}")[0] if name.startswith("sss") else default_arch(name)
        with torch.device("meta"):  # structure only
            notation = layout_notation(stage_layout(build_model(arch)))
        if name == "resnet50":
            assert notation == "[(3, True), (4, True), (6, True), (3, True)]"
        else:
            entry = json.loads((paths.zoo_root() / "entries" / f"{name}.json").read_text())
            assert f"(remaining, first kept) {notation}" in entry["description"]


def test_info_shows_the_blocks_of_residual_networks_only():
    shown = info("resnet20")["blocks"]
    assert shown["notation"] == "[(3, True), (3, True), (3, True)]" and shown["stages"][0]["blocks"] == 3
    assert info("smallcnn")["blocks"] is None


def test_the_engine_builds_the_behaviour_from_the_spec_with_one_scale_per_branch():
    model = create_model("preresnet164")
    [behaviour] = behaviours_for(_tiny_spec(method_training("sss", {"gamma": 0.05, "lr_scale": 2})), model)
    assert isinstance(behaviour, BranchScales) and behaviour.settings == SSSTraining(gamma=0.05, lr_scale=2.0)
    assert len(behaviour.blocks) == 54 and behaviour.blocks[0].output == "layer1.0.conv3"  # 3 stages x 18
