"""`compare` and the structured methods from the CLI: recipes end to end, JSON fields, gates and exit codes."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from prunectl import paths
from prunectl.cli.app import app

runner = CliRunner()

TINY = """
name = "tiny"
dataset = "mnist5k"
model = "lenet5"
seeds = [0, 1]
[baseline]
epochs = 1
[prune]
method = "l1-norm"
ratio = 0.5
[finetune]
epochs = 1
"""


def run(*args) -> object:
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def tiny_recipe(tmp_path_factory):
    folder = tmp_path_factory.mktemp("recipe")
    (folder / "tiny.toml").write_text(TINY)
    return folder / "tiny.toml"


def test_compare_runs_a_recipe_then_reuses_it_and_reports_json(tiny_recipe):
    first = run("compare", tiny_recipe, "--json")
    assert first.exit_code == 0, first.output
    doc = json.loads(first.stdout)
    assert doc["schema"] == 1 and doc["metric"] == "final" and doc["reference"] == "fine-tuned"
    assert doc["dataset"] == "mnist5k" and doc["gates"] == [] and doc["gates_passed"] is None
    arms = {g["arm"]: g for g in doc["groups"]}
    assert set(arms) == {"baseline", "fine-tuned", "scratch-E", "scratch-B"}  # the baseline is a row too
    baseline = arms.pop("baseline")
    assert baseline["level"] is None and baseline["n"] == 2 and baseline["flops"] > arms["fine-tuned"]["flops"]
    assert not any("training-time method" in n for n in doc["notes"])  # a plain baseline needs no remark
    for group in arms.values():
        assert group["n"] == 2 and group["seeds"] == [0, 1] and len(group["runs"]) == 2
        assert group["acc_mean"] == pytest.approx(sum(group["acc_values"]) / 2)
        assert group["acc_std"] is not None and group["level"]["method"] == "l1-norm"
    assert arms["fine-tuned"]["diff"] is None
    assert arms["scratch-E"]["epochs"] == 1 and arms["scratch-B"]["epochs"] >= arms["scratch-E"]["epochs"]
    assert arms["scratch-B"]["flops"] == arms["fine-tuned"]["flops"]
    diff = arms["scratch-B"]["diff"]
    assert diff["vs"] == "fine-tuned" and diff["mean"] == pytest.approx(
        arms["scratch-B"]["acc_mean"] - arms["fine-tuned"]["acc_mean"])
    # Every run is reused: a second call trains nothing and gives the same figures.
    second = run("compare", tiny_recipe, "--json")
    assert json.loads(second.stdout)["groups"] == doc["groups"]
    assert "epoch" not in second.stderr and "prune: done" not in second.stderr


def test_off_a_terminal_every_stage_has_its_line_in_order_pruning_included(tmp_path):
    (tmp_path / "one.toml").write_text(TINY.replace("seeds = [0, 1]", "seeds = [3]"))
    result = run("compare", tmp_path / "one.toml")
    assert result.exit_code == 0, result.output
    stages = [line.split(":")[0] for line in result.stderr.splitlines() if ": done" in line]
    assert stages == ["seed 3 baseline", "seed 3 prune", "seed 3 fine-tune", "seed 3 scratch-E", "seed 3 scratch-B"]
    (prune_line,) = [line for line in result.stderr.splitlines() if line.startswith("seed 3 prune")]
    assert "l1-norm: FLOPs" in prune_line and "accuracy straight after pruning" in prune_line
    again = run("compare", tmp_path / "one.toml")
    assert again.exit_code == 0 and ": done" not in again.stderr  # all from the store: nothing ran


def test_recipe_filter_picks_one_recipes_runs_in_a_store_that_two_recipes_share(tmp_path):
    one = tmp_path / "one.toml"
    one.write_text(TINY.replace("seeds = [0, 1]", "seeds = [5]"))
    other = tmp_path / "other.toml"  # the same baseline, another pruning ratio
    other.write_text(TINY.replace("seeds = [0, 1]", "seeds = [5]").replace("ratio = 0.5", "ratio = 0.25")
                     .replace('name = "tiny"', 'name = "other"'))
    assert run("compare", one).exit_code == 0 and run("compare", other).exit_code == 0
    mixed = json.loads(run("compare", paths.runs_root(), "--json").stdout)
    assert {g["level"]["ratio"] for g in mixed["groups"] if g["level"]} == {0.25, 0.5}
    for recipe, ratio in ((one, 0.5), (other, 0.25)):
        result = run("compare", "--recipe", recipe, "--json")  # no folder: the run store
        assert result.exit_code == 0, result.output
        groups = json.loads(result.stdout)["groups"]
        assert [g["arm"] for g in groups] == ["baseline", "fine-tuned", "scratch-E", "scratch-B"]
        assert {g["level"]["ratio"] for g in groups if g["level"]} == {ratio} and groups[0]["n"] == 1
    changed = run("compare", "--recipe", one, "--set", "seeds=[6]")  # a seed nobody ran
    assert changed.exit_code == 2 and "none of these runs was made by recipe 'tiny'" in changed.output
    both = run("compare", one, "--recipe", other)
    assert both.exit_code == 2 and "--recipe picks a recipe's runs among run folders" in both.output
    before = sorted(p.name for p in paths.runs_root().iterdir())
    run("compare", "--recipe", other, "--set", "finetune.epochs=2")  # derives ids, trains and writes nothing
    assert sorted(p.name for p in paths.runs_root().iterdir()) == before


def test_gates_exit_1_when_failing_0_when_passing_2_when_malformed(tiny_recipe):
    assert run("compare", tiny_recipe, "--gate", "scratch-B >= 0").exit_code == 0
    failing = run("compare", tiny_recipe, "--gate", "scratch-B >= fine-tuned + 101", "--json")
    assert failing.exit_code == 1
    assert json.loads(failing.stdout)["gates_passed"] is False
    malformed = run("compare", tiny_recipe, "--gate", "scratch-B is better")
    assert malformed.exit_code == 2 and malformed.stderr.startswith("error: ")
    unknown = run("compare", tiny_recipe, "--gate", "winning-ticket >= fine-tuned")
    assert unknown.exit_code == 2


def test_markdown_plot_and_run_directories(tiny_recipe, tmp_path):
    md = run("compare", tiny_recipe, "--markdown")
    assert md.exit_code == 0 and "| scratch-B |" in md.stdout.replace("  ", " ")
    plot = tmp_path / "acc.png"
    assert run("compare", tiny_recipe, "--plot", plot).exit_code == 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    doc = json.loads(run("compare", tiny_recipe, "--json").stdout)
    dirs = [p for g in doc["groups"] for p in g["paths"]]
    by_dirs = run("compare", *[p for p in dirs], "--json")
    assert by_dirs.exit_code == 0 and json.loads(by_dirs.stdout)["groups"] == doc["groups"]


def test_slimming_and_l1_norm_end_to_end_from_the_cli(tmp_path):
    base = tmp_path / "base"
    assert run("train", "-m", "smallcnn", "--epochs", "1", "--sparsity", "1e-4", "--out", base).exit_code == 0
    slim = run("prune", base, "--method", "slimming", "--ratio", "0.5", "--out", tmp_path / "slim", "--json")
    assert slim.exit_code == 0, slim.output
    result = json.loads(slim.stdout)
    assert result["structured"] and result["flops"] < result["flops_before"]
    assert result["report"]["pruned_fraction"] == pytest.approx(0.5, abs=0.02)
    arch = json.loads((tmp_path / "slim" / paths.ARCH).read_text())
    assert sum(w for w in arch["config"]["cfg"] if w != "M") == result["report"]["kept_channels"]
    assert run("finetune", tmp_path / "slim", "--epochs", "1").exit_code == 0
    l1 = run("prune", base, "--method", "l1-norm", "--ratio", "0.25", "--out", tmp_path / "l1", "--json")
    assert l1.exit_code == 0, l1.output
    widths = json.loads((tmp_path / "l1" / paths.ARCH).read_text())["config"]["cfg"]
    original = json.loads((base / paths.ARCH).read_text())["config"]["cfg"]
    assert [w if w == "M" else w for w in widths] == [w if w == "M" else max(1, int(w * 0.75)) for w in original]
    scratch = run("scratch", tmp_path / "l1", "-r", base, "--budget", "B", "--json")
    assert scratch.exit_code == 0 and json.loads(scratch.stdout)["arm"] == "scratch-B"


def test_slimming_without_sparsity_training_warns(tmp_path):
    base = tmp_path / "base"
    assert run("train", "-m", "smallcnn", "--epochs", "1", "--out", base).exit_code == 0
    result = run("prune", base, "--method", "slimming", "--ratio", "0.3")
    assert result.exit_code == 0 and "not trained with --sparsity" in result.stderr
