"""`prunectl methods`, `prune --set`, and method facts as the one source of the protocol's per-method numbers."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
from typer.testing import CliRunner

from prunectl import engine
from prunectl.cli.app import app
from prunectl.core.hparams import TrainSpec
from prunectl.core.io import write_json
from prunectl.core.spec import Spec, helptext
from prunectl.engine.derive import finetune_epochs, finetune_spec, scratch_spec
from prunectl.engine.protocols import CIFAR, IMAGENET
from prunectl.engine.prune import PruneSpec
from prunectl.methods import METHODS, Method, MethodFacts, get_method, list_methods
from prunectl.models import default_arch
from prunectl.runs.store import prepare_run, record_protocol, write_lineage

runner = CliRunner()


def one_line_error(result: Any) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    return engine.train(engine.baseline_spec("smallcnn", "mnist5k", epochs=1, seed=1),
                        out=tmp_path_factory.mktemp("runs") / "baseline")


# ---------- prunectl methods ----------

def test_methods_lists_every_method_with_its_facts():
    rows = json.loads(runner.invoke(app, ["methods", "--json"]).stdout)
    assert [r["name"] for r in rows] == list_methods()
    by_name = {r["name"]: r for r in rows}
    assert by_name["slimming"]["structured"] and by_name["slimming"]["trains"]
    assert not by_name["weight"]["structured"] and by_name["weight"]["imagenet_finetune_epochs"] == 10
    assert by_name["l1-norm"]["imagenet_scratch_b_capped"] and "Li et al." in by_name["l1-norm"]["citation"]
    human = runner.invoke(app, ["methods"])
    assert human.exit_code == 0
    for name in list_methods():
        assert name in human.stdout
    assert "needs data" in human.stdout and "structured" in human.stdout


def test_methods_slimming_shows_its_settings_with_defaults_and_help():
    human = runner.invoke(app, ["methods", "slimming"], env={"COLUMNS": "220"})
    assert human.exit_code == 0, human.output
    rows = {line.split("│")[1].strip(): line for line in human.stdout.splitlines() if line.count("│") >= 4}
    assert "0.7" in rows["ratio"] and "global |gamma| threshold" in rows["ratio"]
    assert " 1 " in rows["min_channels"] and "channels every layer keeps at least" in rows["min_channels"]
    doc = json.loads(runner.invoke(app, ["methods", "slimming", "--json"]).stdout)
    settings = {s["name"]: s for s in doc["settings"]}
    assert settings["ratio"]["default"] == 0.7 and settings["ratio"]["type"] == "float"
    assert settings["min_channels"]["default"] == 1 and settings["min_channels"]["help"].startswith("channels")
    assert doc["name"] == "slimming" and doc["imagenet_finetune_epochs"] == 5


def test_methods_settings_are_generated_from_the_dataclass():
    doc = json.loads(runner.invoke(app, ["methods", "l1-norm", "--json"]).stdout)
    assert [s["name"] for s in doc["settings"]] == ["variant", "ratio", "layer_ratios", "skip", "scope", "round_to"]
    assert {s["name"]: s["type"] for s in doc["settings"]}["skip"] == "tuple[int, ...]"


def test_an_unknown_method_is_a_did_you_mean_exit_2():
    line = one_line_error(runner.invoke(app, ["methods", "slimmin"]))
    assert "did you mean 'slimming'" in line


# ---------- prune --set ----------

def test_prune_set_sets_any_setting_and_matches_the_engine_spec(baseline, tmp_path):
    result = runner.invoke(app, ["prune", str(baseline.path), "--method", "slimming", "--set", "ratio=0.5",
                                 "--set", "min_channels=3", "--out", str(tmp_path / "p"), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["settings"] == {"ratio": 0.5, "min_channels": 3}
    assert doc["id"] == engine.prune_spec(baseline, "slimming", {"ratio": 0.5, "min_channels": 3}).spec_hash()
    assert min(doc["report"]["widths"].values()) >= 3


def test_the_ratio_shortcut_is_the_same_setting(baseline):
    by_set = engine.prune_spec(baseline, "weight", {"ratio": 0.3})
    result = runner.invoke(app, ["prune", str(baseline.path), "--method", "weight", "--ratio", "0.3", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["id"] == by_set.spec_hash()
    line = one_line_error(runner.invoke(app, ["prune", str(baseline.path), "--method", "weight", "--ratio", "0.3",
                                              "--set", "ratio=0.4"]))
    assert "ratio is given twice" in line and "--ratio" in line


@pytest.mark.parametrize(
    "args, needles",
    [
        (["--method", "slimming", "--set", "min_chanels=2"],
         ["method 'slimming' has no setting 'min_chanels'", "its settings: ratio, min_channels"]),
        (["--method", "slimming", "--set", "min_channels=\"two\""], ["'min_channels' must be an integer"]),
        (["--method", "weight", "--set", "ratio"], ["--set takes KEY=VALUE"]),
    ],
)
def test_prune_set_mistakes_are_one_line_exit_2(baseline, args, needles):
    line = one_line_error(runner.invoke(app, ["prune", str(baseline.path), *args]))
    for needle in needles:
        assert needle in line


def test_a_recipe_prune_table_is_validated_like_set(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\ndataset = "mnist5k"\nmodel = "smallcnn"\n[prune]\nmethod = "slimming"\n'
                   'ratoi = 0.5\n')
    with pytest.raises(Exception, match=r"has no setting 'ratoi' \(its settings: ratio, min_channels\)"):
        engine.load_recipe(bad)


# ---------- facts drive the protocol ----------

@dataclass(frozen=True)
class _NoSettings(Spec):
    ratio: float = helptext("unused", default=0.5)


def _fake(capped: bool, epochs: int | None) -> type[Method]:
    class Fake(Method):
        facts = MethodFacts(name="fake", structured=True, summary="a test double", citation="none",
                            imagenet_finetune_epochs=epochs, imagenet_scratch_b_capped=capped)
        settings = _NoSettings

        def prune(self, model, settings, context):  # pragma: no cover - never called
            raise AssertionError

    return Fake


def _imagenet_lineage(tmp_path, method: str):
    """A finished ImageNet-protocol baseline (LeNet-5 sized for it, never trained) and a pruned child of it with
    4× fewer FLOPs, as run directories; nothing is trained."""
    arch = default_arch("lenet5", num_classes=1000, input_size=(1, 28, 28))
    base = prepare_run(TrainSpec(arch=arch, dataset="imagenet", optim=IMAGENET.optim, schedule=IMAGENET.schedule),
                       "train", tmp_path / "base")
    record_protocol(base, {"name": "imagenet", "why": "test"})
    write_json(base.file("result.json"), {"final_acc": 0.0})
    pruned = prepare_run(PruneSpec(parent=base.id, method=method, settings={}, dataset="imagenet"), "prune",
                         tmp_path / "pruned")
    small = default_arch("lenet5", num_classes=1000, input_size=(1, 28, 28), conv_widths=(3, 4))
    write_json(pruned.file("arch.json"), small.to_dict())
    write_json(pruned.file("result.json"), {"final_acc": 0.0})
    write_lineage(pruned, base)
    return base, pruned


@pytest.mark.parametrize("capped, epochs", [(True, 7), (False, 3)])
def test_derive_reads_the_imagenet_numbers_from_the_method_facts(tmp_path, monkeypatch, capped, epochs):
    monkeypatch.setitem(METHODS._entries, "fake", _fake(capped, epochs))
    assert get_method("fake").name == "fake" and get_method("fake").structured
    assert finetune_epochs(IMAGENET, "fake") == epochs and finetune_epochs(CIFAR, "fake") == 40
    base, pruned = _imagenet_lineage(tmp_path, "fake")
    assert finetune_spec(pruned).schedule.epochs == epochs
    budget = scratch_spec(pruned, base, budget="B").budget
    assert budget["flops_ratio"] >= 2
    assert budget["epochs"] == (180 if capped else int(90 * budget["flops_ratio"]))
    # an architecture file (a zoo entry's) follows the facts of the method it names
    from_arch = scratch_spec(pruned.arch(), base, budget="B", method="fake").budget
    assert from_arch["epochs"] == budget["epochs"]
    assert scratch_spec(pruned.arch(), base, budget="B").budget["epochs"] == int(90 * budget["flops_ratio"])


def test_a_method_without_facts_cannot_register():
    from prunectl.methods import register_method

    class Bare(Method):
        settings = _NoSettings

        def prune(self, model, settings, context):  # pragma: no cover
            raise AssertionError

    with pytest.raises(TypeError, match="facts"):
        register_method(Bare)
