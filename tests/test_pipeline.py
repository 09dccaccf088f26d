"""The rethinking pipeline: prune → extract-arch → fine-tune / scratch-E / scratch-B, through engine and CLI."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from prunectl import engine
from prunectl.cli.app import app
from prunectl.core.hparams import ScheduleSpec, TrainSpec
from prunectl.engine.lottery import LotterySettings
from prunectl.engine.recipe import builtin_recipes, load_recipe
from prunectl.methods import get_method, list_methods
from prunectl.models import default_arch, list_models
from prunectl.runs.store import prepare_run

runner = CliRunner()
VGG16_A = [32, 64, "M", 128, 128, "M", 256, 256, 256, "M", 256, 256, 256, "M", 256, 256, 256]


def cli(*args: str):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    import os

    os.environ["PRUNECTL_HOME"] = str(tmp_path_factory.mktemp("home"))
    spec = engine.baseline_spec("lenet5", "mnist5k", epochs=2, seed=5)
    return engine.train(spec, out=tmp_path_factory.mktemp("runs") / "baseline")


def _zeros_hold(weights: dict[str, torch.Tensor], mask: dict[str, torch.Tensor]) -> bool:
    return all(torch.all(weights[name][m == 0] == 0) for name, m in mask.items())


def test_weight_level_hits_the_sparsity_and_the_mask_holds_through_every_training(baseline, tmp_path):
    pruned = engine.prune(baseline, engine.prune_spec(baseline, "weight", {"ratio": 0.6}), out=tmp_path / "p")
    mask = pruned.mask()
    total = sum(m.numel() for m in mask.values())
    assert abs(sum(int((m == 0).sum()) for m in mask.values()) - 0.6 * total) <= 1
    assert sorted(mask) == sorted(f"{n}.weight" for n, m in baseline.model().named_modules()
                                  if isinstance(m, torch.nn.Conv2d))  # conv weights only, by default
    assert _zeros_hold(pruned.weights(), mask)
    result = pruned.result()
    assert result["flops"] < result["flops_before"] and result["structured"] is False

    ft = engine.train(engine.finetune_spec(pruned, epochs=1), parent=pruned, out=tmp_path / "ft")
    e = engine.train(engine.scratch_spec(pruned, baseline, budget="E"), parent=pruned, out=tmp_path / "e")
    b = engine.train(engine.scratch_spec(pruned, baseline, budget="B"), parent=pruned, out=tmp_path / "b")
    for run in (ft, e, b):
        assert _zeros_hold(run.weights(), mask), run.path
        assert all(torch.equal(run.mask()[n], mask[n]) for n in mask)  # each run carries the mask it kept
    # The fine-tuned model starts from the pruned weights; scratch starts elsewhere.
    assert ft.spec().init == "inherit" and e.spec().init == "random"
    assert [r["kind"] for r in ft.lineage()] == ["PruneSpec", "TrainSpec"]
    assert ft.result()["arm"] == "fine-tuned" and b.result()["arm"] == "scratch-B"
    level = ft.result()["level"]
    assert level["method"] == "weight" and level["ratio"] == 0.6 and level["remaining"] == pytest.approx(0.4, abs=1e-3)
    # scratch-B's budget is counted on the sparse FLOPs of the masked model, not the dense ones.
    budget = b.spec().budget
    assert budget["sparse_flops"] and budget["flops_pruned"] == result["flops"]
    assert b.spec().schedule.epochs == int(2 * budget["flops_reference"] / budget["flops_pruned"])


def test_scratch_b_for_vgg16_a_from_a_160_epoch_baseline_is_243_epochs(tmp_path):
    base = TrainSpec(arch=default_arch("vgg16", num_classes=10, input_size=(3, 32, 32), head="l1"),
                     dataset="cifar10", schedule=ScheduleSpec(epochs=160))
    reference = prepare_run(base, "train", tmp_path / "vgg16")  # the spec is all the budget needs
    arch_a = default_arch("vgg16", num_classes=10, input_size=(3, 32, 32), head="l1", cfg=VGG16_A)
    spec = engine.scratch_spec(arch_a, reference, budget="B")
    assert spec.schedule.epochs == 243
    assert spec.schedule.milestone_epochs() == [122, 182]  # lr steps scale with the epochs
    assert spec.budget["rule"] == "int(160 × 1.5196) = 243"
    assert engine.scratch_spec(arch_a, reference, budget="E").schedule.epochs == 160
    with_ft = engine.scratch_spec(arch_a, reference, budget="B", add_finetune_epochs=True)
    assert with_ft.schedule.epochs == int(200 * spec.budget["flops_ratio"])
    assert spec.stage == "scratch-b" and spec.init == "random"


def test_cli_pipeline_with_extract_arch_and_scratch_from_a_file(baseline, tmp_path):
    cli("prune", baseline.path, "--method", "weight", "--ratio", "0.5", "--out", tmp_path / "pruned")
    out = cli("extract-arch", tmp_path / "pruned", "-o", tmp_path / "arch.json", "--json")
    written = json.loads(out.stdout)
    assert (tmp_path / "arch.mask.safetensors").is_file() and abs(written["density"] - 0.5) < 1e-3
    refused = runner.invoke(app, ["scratch", str(tmp_path / "arch.json"), "-r", str(baseline.path)])
    assert refused.exit_code == 2 and "mask" in refused.stderr
    report = json.loads(cli("finetune", tmp_path / "pruned", "--epochs", "1", "--json").stdout)
    assert report["arm"] == "fine-tuned" and report["epochs"] == 1
    arch = json.loads(cli("extract-arch", baseline.path).stdout)
    assert arch["family"] == "lenet" and arch["config"]["conv_widths"]
    (tmp_path / "dense.json").write_text(json.dumps(arch))
    scratch = json.loads(cli("scratch", tmp_path / "dense.json", "-r", baseline.path, "--budget", "E",
                             "--json").stdout)
    assert scratch["arm"] == "scratch-E" and scratch["epochs"] == 2 and scratch["budget"]["flops_ratio"] == 1.0


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--method", "wieght", "--ratio", "0.5"], "did you mean 'weight'"),
        (["--method", "weight", "--ratio", "1.5"], "ratio must be in (0, 1)"),
        (["--method", "weight", "--variant", "A"], "has no setting 'variant'"),
    ],
)
def test_prune_mistakes_are_one_line_exit_2(baseline, args, needle):
    result = runner.invoke(app, ["prune", str(baseline.path), *args])
    assert result.exit_code == 2, result.output
    assert needle in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_scratch_and_prune_refuse_the_wrong_kind_of_run(baseline, tmp_path):
    pruned = engine.prune(baseline, engine.prune_spec(baseline, "weight", {"ratio": 0.3}), out=tmp_path / "p")
    wrong_reference = runner.invoke(app, ["scratch", str(pruned.path), "-r", str(pruned.path)])
    assert wrong_reference.exit_code == 2 and "not a training run" in wrong_reference.stderr
    bad_budget = runner.invoke(app, ["scratch", str(pruned.path), "-r", str(baseline.path), "-b", "C"])
    assert bad_budget.exit_code == 2 and "budget must be E or B" in bad_budget.stderr
    not_a_run = runner.invoke(app, ["prune", str(tmp_path), "--method", "weight"])
    assert not_a_run.exit_code == 2 and "not a prunectl run" in not_a_run.stderr


@pytest.mark.parametrize("name", builtin_recipes())
def test_every_shipped_recipe_names_real_models_methods_and_settings(name):
    recipe = load_recipe(name)
    assert (recipe.model in list_models() or recipe.model in engine.library_models()) and len(recipe.seeds) >= 3
    default_arch(recipe.model, **dict(recipe.model_options))  # the options are the model's
    if recipe.lottery:
        LotterySettings.from_dict(recipe.lottery)  # validates
        assert recipe.arms == ("winning-ticket", "random-init")
        return
    assert recipe.prune["method"] in list_methods()
    method = get_method(recipe.prune["method"])
    method.settings(**{k: v for k, v in recipe.prune.items() if k != "method"})  # validates
    assert recipe.arms == ("fine-tuned", "scratch-E", "scratch-B")


def test_a_recipe_with_an_unknown_arm_is_refused(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\ndataset = "mnist5k"\nmodel = "lenet5"\narms = ["scratch-C"]\n'
                   '[prune]\nmethod = "weight"\n')
    with pytest.raises(Exception, match="unknown arm"):
        load_recipe(bad)


def test_weight_pruning_a_model_without_convs_says_to_include_linear(tmp_path):
    mlp = engine.train(engine.baseline_spec("lenet300100", "mnist5k", epochs=1), out=tmp_path / "mlp")
    refused = runner.invoke(app, ["prune", str(mlp.path), "--method", "weight", "--ratio", "0.5"])
    assert refused.exit_code == 2 and "--include-linear" in refused.stderr
    cli("prune", mlp.path, "--method", "weight", "--ratio", "0.5", "--include-linear", "--out", tmp_path / "p")
    mask = engine.open_run(tmp_path / "p").mask()
    assert sorted(mask) == ["classifier.fc1.weight", "classifier.fc2.weight", "classifier.fc3.weight"]
