"""Recipes you can find and adapt: `prunectl recipes`, did-you-mean for a misspelt recipe, `--set` overrides."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from prunectl.cli.app import app
from prunectl.cli.recipes import with_overrides
from prunectl.engine.recipe import builtin_recipes, load_recipe
from prunectl.errors import BadValueError

runner = CliRunner()


def test_recipes_lists_every_shipped_recipe_with_its_description():
    result = runner.invoke(app, ["recipes", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["name"] for r in rows] == builtin_recipes() and "quick" in builtin_recipes()
    quick = next(r for r in rows if r["name"] == "quick")
    assert quick["description"] == load_recipe("quick").description and quick["method"] == "l1-norm"
    assert all(r["description"] for r in rows)
    table = runner.invoke(app, ["recipes"])
    assert table.exit_code == 0 and "quick-lottery" in table.stdout


@pytest.mark.parametrize("command", ["compare", "lottery"])
def test_a_misspelt_recipe_gets_a_did_you_mean(command, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, [command, "quik"])
    if command == "lottery":  # lottery's target is a run or a recipe: a missing run is its own one-line error
        assert result.exit_code == 2 and "Traceback" not in result.output
        return
    assert result.exit_code == 2, result.output
    assert "did you mean 'quick'" in result.output and "prunectl recipes" in result.output


def test_set_overrides_fields_and_tables_and_is_validated():
    quick = load_recipe("quick")
    changed = with_overrides(quick, {"seeds": [0, 1], "baseline.epochs": 1, "prune.ratio": 0.25})
    assert changed.seeds == (0, 1) and changed.baseline["epochs"] == 1 and changed.prune["ratio"] == 0.25
    assert changed.prune["method"] == "l1-norm" and changed.finetune == quick.finetune
    assert with_overrides(quick, {}) is quick
    with pytest.raises(BadValueError, match="no field 'seedz'"):
        with_overrides(quick, {"seedz": [1]})
    with pytest.raises(BadValueError, match="repeats a seed"):
        with_overrides(quick, {"seeds": [1, 1]})
    with pytest.raises(BadValueError, match="ratio"):
        with_overrides(quick, {"prune.ratio": "lots"})


def test_compare_runs_a_recipe_with_overrides_without_copying_its_file():
    result = runner.invoke(app, ["compare", "quick", "--set", "seeds=[4]", "--set", "baseline.epochs=1",
                                 "--set", "finetune.epochs=1", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert {tuple(g["seeds"]) for g in doc["groups"]} == {(4,)}
    assert {g["arm"]: g["epochs"] for g in doc["groups"]}["fine-tuned"] == 1
    bad = runner.invoke(app, ["compare", "quick", "--set", "nope=1"])
    assert bad.exit_code == 2 and "no field 'nope'" in bad.output


def test_set_needs_a_recipe(tmp_path):
    result = runner.invoke(app, ["compare", str(tmp_path), "--set", "seeds=[0]"])
    assert result.exit_code == 2 and "name one recipe" in result.output


def test_a_data_dir_without_the_files_says_which_files_are_expected(tmp_path):
    result = runner.invoke(app, ["train", "-m", "lenet5", "-d", "cifar10", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2, result.output
    message = result.output.strip()
    assert message.count("\n") == 0
    assert "cifar-10-batches-py/{data_batch_1, data_batch_2, data_batch_3, data_batch_4, data_batch_5, " \
           "test_batch}" in message and "6 of 6 are missing" in message and str(tmp_path) in message
