"""Soft Filter Pruning (He et al., IJCAI 2018): the mask steps, their schedule, soft regrowth, exact resume, hard
pruning and its equivalence, the SFP protocol of the recipes, and the bad inputs."""

from __future__ import annotations

import json

import pytest
import torch
from tinymodels import randomised
from torch import nn
from typer.testing import CliRunner

from prunectl import paths
from prunectl.cli.app import app
from prunectl.core.hparams import MethodTraining, OptimSpec, ScheduleSpec
from prunectl.data import load_dataset
from prunectl.data.base import InMemoryDataset
from prunectl.engine.compare import report
from prunectl.engine.recipe import load_recipe
from prunectl.engine.waves import PrunedAsArm
from prunectl.errors import BadValueError
from prunectl.methods import PruneContext, get_method
from prunectl.methods.sfp import SFPSettings, SFPTraining, SoftFilterMask, masked_convs, pruned_count
from prunectl.models import build_model, create_model, default_arch
from prunectl.runs.store import open_run
from prunectl.structure import PROVIDERS, masked_model
from prunectl.training.trainer import Trainer

runner = CliRunner()
SFP = get_method("sfp")


def tiny_resnet(seed: int = 0) -> nn.Module:
    """ResNet-8 on 1×12×12 with random BN statistics and shifts (β ≠ 0)."""
    return randomised(default_arch("resnet8", num_classes=10, input_size=(1, 12, 12)), seed)


def conv_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: m.weight.detach().clone() for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def zero_filters(weight: torch.Tensor) -> set[int]:
    return {i for i in range(weight.shape[0]) if torch.count_nonzero(weight[i]) == 0}


@pytest.fixture(scope="module")
def digits() -> InMemoryDataset:
    """512 training and 256 test images of mnist5k: a few seconds per ResNet-8 epoch on one core."""
    full = load_dataset("mnist5k")
    (xtr, ytr), (xte, yte) = full.tensors("train"), full.tensors("test")
    return InMemoryDataset("mnist-sub", train=(xtr[:512], ytr[:512]), test=(xte[:256], yte[:256]), num_classes=10,
                           mean=full.mean, std=full.std, augment=full.augment)


def trainer(run_dir, data, behaviour, epochs=3, progress=None) -> Trainer:
    torch.manual_seed(0)
    model = create_model("resnet8", num_classes=10, input_size=(1, 28, 28))
    run_dir.mkdir(parents=True, exist_ok=True)
    optim = OptimSpec(lr=0.05, batch_size=128, weight_decay=5e-4, nesterov=True)
    return Trainer(model, data, optim, ScheduleSpec(epochs=epochs, milestones=(0.5,)), 0, run_dir,
                   [behaviour(model) if callable(behaviour) else behaviour], device="cpu", progress=progress)


# -- T-SFP-1: exact zeros, smallest L2, only conv weights -------------------------------------------------------
@pytest.mark.parametrize("rate", [0.7, 0.6])
def test_a_mask_step_zeroes_exactly_the_smallest_l2_filters_of_every_conv_and_nothing_else(rate):
    model = tiny_resnet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    convs = conv_weights(model)
    assert list(convs)[0] == "conv1" and masked_convs(model, SFPTraining(rate=rate)) == list(convs)  # stem too
    SoftFilterMask(SFPTraining(rate=rate), model).apply_mask(model)
    after = conv_weights(model)
    for name, w in convs.items():
        n = pruned_count(w.shape[0], rate)
        assert n == int(w.shape[0] * (1 - rate)) and n > 0
        smallest = set(torch.argsort(w.flatten(1).norm(dim=1))[:n].tolist())
        assert zero_filters(after[name]) == smallest, name
        kept = [i for i in range(w.shape[0]) if i not in smallest]
        assert torch.equal(after[name][kept], w[kept])
    for key, value in model.state_dict().items():  # BN scales, shifts, statistics and the classifier untouched
        if not any(key == f"{c}.weight" for c in convs):
            assert torch.equal(value, before[key]), key


def test_the_paper_counts_per_stage_at_rate_0_7():
    # 4/16, 9/32, 19/64 filters zeroed: int(N × 0.3) in floating point, as the authors' Mask computes it.
    assert [pruned_count(n, 0.7) for n in (16, 32, 64)] == [4, 9, 19]
    assert [pruned_count(n, 0.6) for n in (16, 32, 64)] == [6, 12, 25]


def test_skip_stem_leaves_the_first_conv_whole():
    model = tiny_resnet()
    stem = model.conv1.weight.detach().clone()
    SoftFilterMask(SFPTraining(skip_stem=True), model).apply_mask(model)
    assert torch.equal(model.conv1.weight, stem) and zero_filters(model.layer1[0].conv1.weight)


def test_skip_shortcuts_leaves_the_projection_convs_whole():
    model = build_model(PROVIDERS.get("imagenet_resnet").examples()["basic"])
    every, some = masked_convs(model, SFPTraining()), masked_convs(model, SFPTraining(skip_shortcuts=True))
    assert sorted(set(every) - set(some)) == [f"layer{s}.0.downsample.0" for s in (1, 2, 3, 4)]


# -- T-SFP-3: re-selection from the current weights ------------------------------------------------------------
def test_the_next_mask_keeps_a_zeroed_filter_that_grew_large_and_zeroes_another():
    model = tiny_resnet()
    mask = SoftFilterMask(SFPTraining(rate=0.7), model)
    mask.apply_mask(model)
    weight = model.layer2[0].conv1.weight
    first = zero_filters(weight)
    grown = min(first)
    with torch.no_grad():
        weight[grown] = 10.0  # the largest filter now
    mask.apply_mask(model)
    second = zero_filters(weight)
    assert grown not in second and len(second) == len(first) == pruned_count(32, 0.7)
    assert second - first, "another filter was zeroed in its place"
    assert int(mask.zeroed["layer2.0.conv1"].sum()) == len(second) and mask.steps == 2


# -- T-SFP-2 and T-SFP-4: soft regrowth, E + 1 masks, the last epoch always masks ------------------------------
def test_zeroed_filters_regrow_during_an_epoch_and_the_mask_runs_e_plus_1_times(tmp_path, digits):
    seen: dict[str, int] = {}
    behaviours: list[SoftFilterMask] = []

    def make(model):
        behaviours.append(SoftFilterMask(SFPTraining(rate=0.7), model))
        return behaviours[0]

    def watch(event):
        if event.epoch == 2 and event.batch == 1:  # one step after the mask that closed epoch 1
            model = run.model
            seen["regrown"] = sum(int(torch.count_nonzero(model.get_submodule(n).weight[z.bool()].flatten(1)
                                                          .abs().sum(1)))
                                  for n, z in behaviours[0].zeroed.items())

    run = trainer(tmp_path, digits, make, epochs=3, progress=watch)
    run.fit()
    assert seen["regrown"] > 0, "no zeroed filter moved: the pruning was not soft"
    assert behaviours[0].steps == 3 + 1
    for name in behaviours[0].convs:  # the run ends on a mask step
        w = run.model.get_submodule(name).weight
        assert len(zero_filters(w)) == pruned_count(w.shape[0], 0.7)


def test_an_interval_masks_after_epochs_e_with_e_mod_interval_0_and_after_the_last():
    model = tiny_resnet()
    mask = SoftFilterMask(SFPTraining(interval=2), model)
    mask.on_train_start(model)
    for epoch in range(5):
        mask.on_epoch_end(model, epoch, 5)
    assert mask.steps == 1 + 3  # start; after epochs 0, 2 and 4 (4, the last, masks once)
    mask = SoftFilterMask(SFPTraining(interval=2), model)
    for epoch in range(4):
        mask.on_epoch_end(model, epoch, 4)
    assert mask.steps == 3  # after epochs 0, 2 and the last, 3


# -- resume -----------------------------------------------------------------------------------------------------
class Killed(Exception):
    """Stands in for SIGKILL: raised from inside the loop, mid-epoch (the checkpoint is all that survives)."""


def test_a_killed_sfp_run_resumes_to_bit_identical_weights(tmp_path, digits):
    straight = trainer(tmp_path / "a", digits, lambda m: SoftFilterMask(SFPTraining(rate=0.6), m))
    straight.fit()

    def kill(event):
        if event.epoch == 2 and event.batch == 2:
            raise Killed

    with pytest.raises(Killed):
        trainer(tmp_path / "b", digits, lambda m: SoftFilterMask(SFPTraining(rate=0.6), m), progress=kill).fit()
    resumed = trainer(tmp_path / "b", digits, lambda m: SoftFilterMask(SFPTraining(rate=0.6), m))
    resumed.fit()
    a, b = straight.behaviours[0], resumed.behaviours[0]
    assert isinstance(a, SoftFilterMask) and isinstance(b, SoftFilterMask)
    assert a.steps == b.steps == 4 and all(torch.equal(a.zeroed[n], b.zeroed[n]) for n in a.convs)
    for (name, x), (_, y) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items(),
                                 strict=True):
        assert torch.equal(x, y), name


# -- T-SFP-6: hard pruning ---------------------------------------------------------------------------------------
def trained(seed: int = 0, rate: float = 0.7) -> tuple[nn.Module, MethodTraining]:
    """A tiny ResNet as SFP training leaves it (its last step a mask), and the training record."""
    model = tiny_resnet(seed)
    SFP.training(SFPTraining(rate=rate), model).on_train_start(model)
    return model, MethodTraining("sfp", SFPTraining(rate=rate).to_dict(omit_defaults=True))


def silence_removed_bn_constants(model: nn.Module, removed: dict[str, list[int]]) -> None:
    """Set β = γ·μ/σ on the BN channels of removed filters, so BN(0) = 0 there."""
    with torch.no_grad():
        for conv, channels in removed.items():
            bn = model.get_submodule(conv.replace("conv", "bn"))
            sigma = (bn.running_var + bn.eps).sqrt()
            bn.bias[channels] = (bn.weight * bn.running_mean / sigma)[channels]


def test_hard_pruning_removes_inner_filters_and_masks_the_residual_tied_ones():
    model, training = trained()
    out = SFP.prune(model, SFPSettings(rate=0.7), PruneContext(training=training))
    layers = out.report["layers"]
    assert layers["conv1"] == {"filters": 16, "kept": 12, "how": "masked"}  # the stem feeds the residual stream
    assert layers["layer1.0.conv1"] == {"filters": 16, "kept": 12, "how": "removed"}
    assert layers["layer1.0.conv2"]["how"] == "masked" and layers["layer3.0.conv1"]["kept"] == 64 - 19
    pruned = out.model
    assert pruned.layer2[0].conv1.out_channels == 32 - 9 and pruned.layer2[0].conv2.in_channels == 32 - 9
    assert pruned.layer2[0].conv2.out_channels == 32  # full width, 9 filters masked
    assert out.mask is not None and set(out.mask) == {"conv1.weight", *(f"layer{s}.0.conv2.weight" for s in (1, 2, 3))}
    for name, mask in out.mask.items():
        assert torch.equal(pruned.get_submodule(name[:-7]).weight * mask, pruned.get_submodule(name[:-7]).weight)
    assert out.report["removed_filters"] == 4 + 9 + 19 and out.report["masked_filters"] == 4 + 4 + 9 + 19


def test_the_hard_pruned_model_equals_the_masked_one_and_naive_slicing_does_not_when_bn_shifts_are_nonzero():
    model, training = trained()
    model.eval()
    out = SFP.prune(model, SFPSettings(rate=0.7), PruneContext(training=training))
    x = torch.randn(8, 1, 12, 12)
    pruned = out.model.eval()
    with torch.no_grad():
        # equal to the masked reference: the removed channels silenced, the residual-tied zeros kept in place
        assert torch.allclose(pruned(x), masked_model(model, out.edit)(x), atol=1e-5)
        # the SFP model as trained: its zeroed filters still output BN's constant β − γμ/σ, through ReLU into
        # the next conv (whose zero padding makes it position-dependent, so no bias can absorb it): slicing them
        # out changes the function ...
        assert not torch.allclose(pruned(x), model(x), atol=1e-3)
    removed = {n: [i for i in range(v["filters"]) if i not in keep]
               for n, v in out.report["layers"].items() if v["how"] == "removed"
               for keep in [set(out.edit.keep[n])]}
    silence_removed_bn_constants(model, removed)
    again = SFP.prune(model, SFPSettings(rate=0.7), PruneContext(training=training)).model.eval()
    with torch.no_grad():  # ... and is exact once those constants are 0; the masked (tied) zeros keep their β
        assert torch.allclose(again(x), model(x), atol=1e-5)


def test_slicing_the_residual_tied_zeros_would_drop_their_bn_shift():
    """Why block-output and stem zeros stay as a mask: a zeroed filter there still adds BN's β to the stream."""
    model, _ = trained()
    model.eval()
    bn = model.layer1[0].bn2
    zeros = sorted(zero_filters(model.layer1[0].conv2.weight))
    with torch.no_grad():
        h = torch.relu(model.bn1(model.conv1(torch.randn(2, 1, 12, 12))))
        branch = bn(model.layer1[0].conv2(torch.relu(model.layer1[0].bn1(model.layer1[0].conv1(h)))))
    constant = bn.bias - bn.weight * bn.running_mean / (bn.running_var + bn.eps).sqrt()
    assert torch.allclose(branch[:, zeros], constant[zeros].view(1, -1, 1, 1).expand_as(branch[:, zeros]), atol=1e-6)
    assert constant[zeros].abs().min() > 0  # non-zero: removing those channels would change the block's output


# -- the protocol and recipes -------------------------------------------------------------------------------------
def test_the_sfp_recipes_follow_the_authors_cifar_protocol():
    for name, rate in [("sfp-resnet56-cifar10", 0.7), ("sfp-resnet56-r0.6-cifar10", 0.6),
                       ("sfp-resnet110-cifar10", 0.7), ("sfp-resnet20-cifar10", 0.7)]:
        recipe = load_recipe(name)
        spec = recipe.baseline_spec(0)
        assert spec.training == MethodTraining("sfp", {"rate": rate} if rate != 0.7 else {})
        assert recipe.prune == {"method": "sfp", "rate": rate}
        assert spec.schedule.epochs == 200 and spec.optim.batch_size == 128 and spec.optim.nesterov
        assert (spec.optim.lr, spec.optim.momentum, spec.optim.weight_decay) == (0.1, 0.9, 5e-4)
        s = spec.schedule
        assert (s.warmup_epochs, s.warmup_lr, s.gamma, s.milestone_epochs()) == (1, 0.01, 0.2, [60, 120, 160])
        lrs = [s.lr_at(e, spec.optim.lr) for e in (0, 1, 59, 60, 120, 160, 199)]
        assert lrs == pytest.approx([0.01, 0.1, 0.1, 0.02, 0.004, 0.0008, 0.0008])
        assert recipe.finetune.get("epochs", 0) == 0 and len(recipe.seeds) >= 3 and recipe.paper
        assert spec.arch.config["shortcut"] == "subsample"  # SFP's DownsampleA


# -- bad inputs ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rate", [0, 0.0, -0.1, 1.5, True, "0.7"])
def test_a_rate_outside_0_1_is_refused(rate):
    for cls in (SFPTraining, SFPSettings):
        with pytest.raises(BadValueError, match=r"rate .*must be in \(0, 1\]") as err:
            cls(rate=rate)
        assert "\n" not in str(err.value)
    assert SFPTraining(rate=1).rate == 1


def test_prune_refuses_a_run_not_trained_with_sfp_or_at_another_rate():
    model, training = trained(rate=0.6)
    for context, message in [(PruneContext(), "trained without a training-time method"),
                             (PruneContext(training=MethodTraining("slimming", {"sparsity": 1e-4})), "'slimming'"),
                             (PruneContext(training=training), "trained with rate=0.6, not rate=0.7")]:
        with pytest.raises(BadValueError, match=message):
            SFP.prune(model, SFPSettings(rate=0.7), context)


def invoke(*args: str):
    return runner.invoke(app, list(args))


def test_the_cli_trains_with_sfp_prunes_and_refuses_bad_input_in_one_line(tmp_path):
    run = tmp_path / "sfp"
    done = invoke("train", "-m", "resnet8", "-d", "mnist5k", "--method", "sfp", "--set", "rate=0.7", "--epochs",
                  "1", "--batch-size", "256", "--out", str(run), "--json")
    assert done.exit_code == 0, done.output
    spec = json.loads((run / paths.SPEC).read_text())
    assert spec["spec"]["training"] == {"method": "sfp", "settings": {}}

    for args, message in [
        (("prune", str(run), "--method", "sfp", "--set", "rate=0.6"), "trained with rate=0.7, not rate=0.6"),
        (("prune", str(run), "--method", "sfp", "--set", "rate=1.2"), "must be in (0, 1]"),
        (("train", "-m", "lenet300100", "-d", "mnist5k", "--method", "sfp", "--epochs", "1", "--out",
          str(tmp_path / "mlp")), "sfp needs conv-weights"),
        (("train", "-m", "resnet8", "-d", "mnist5k", "--method", "sfp", "--set", "rate=0", "--epochs", "1",
          "--out", str(tmp_path / "zero")), "must be in (0, 1]"),
    ]:
        result = invoke(*args)
        assert result.exit_code == 2, result.output
        assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "mlp").exists() and not (tmp_path / "zero").exists()
    assert not list((tmp_path / "home").glob("**/spec.json")), "a refused prune wrote a run"

    pruned = tmp_path / "pruned"
    done = invoke("prune", str(run), "--method", "sfp", "--set", "rate=0.7", "--out", str(pruned), "--json")
    assert done.exit_code == 0, done.output
    result = json.loads((pruned / paths.RESULT).read_text())
    assert result["report"]["layers"]["layer1.0.conv1"] == {"filters": 16, "kept": 12, "how": "removed"}
    assert result["flops"] < result["flops_before"] and result["params"] < result["params_before"]
    assert 0 <= result["pruned_acc"] <= 100 and (pruned / paths.MASK).is_file()

    # [finetune] epochs = 0: the pruned run itself is the fine-tuned arm in compare, at its accuracy after pruning
    rep = report([PrunedAsArm(pruned, "fine-tuned")])
    (group,) = rep.groups
    assert group.arm == "fine-tuned" and group.level == {"method": "sfp"} and group.n == 1
    assert group.acc_mean == pytest.approx(result["pruned_acc"])
    assert open_run(pruned).result().get("arm") is None  # the run on disk is no arm: other recipes see a prune run
    # The SFP-trained baseline is a row too, with a note that it is the soft-pruned model, not an unpruned one
    with_baseline = report([open_run(run), PrunedAsArm(pruned, "fine-tuned")])
    assert [g.arm for g in with_baseline.groups] == ["baseline", "fine-tuned"]
    assert any("trained with sfp's training-time method" in n and "last soft mask" in n for n in with_baseline.notes)
