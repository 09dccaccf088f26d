"""The arm registry is the one definition of the arms: compare's names and order, train's result `arm`, recipes."""

from __future__ import annotations

import pytest

from prunectl.engine.arms import ARMS, LABELS, arm, arm_for_stage, arm_named, recipe_arms
from prunectl.engine.compare import arm_name, parse_gate
from prunectl.engine.recipe import Recipe, load_recipe
from prunectl.engine.train import _arm_label
from prunectl.errors import BadValueError


@pytest.mark.parametrize("name, label", [(n, a.label) for a in ARMS for n in (a.label, *a.aliases)])
def test_every_alias_of_every_arm_parses_in_compare_and_gates(name, label):
    assert arm_name(name) == label and arm_name(name.upper()) == label and arm_name(f" {name} ") == label
    gate = parse_gate(f"{name} >= {LABELS[0]} - 0.5")
    assert gate.arm == label


def test_the_registry_keeps_the_published_arms_and_stages():
    # compare's JSON schema (docs/compare-json.md) and users' result.json files name exactly these.
    assert LABELS == ("baseline", "fine-tuned", "scratch-E", "scratch-B", "winning-ticket", "random-init")
    assert {a.stage: a.label for a in ARMS} == {
        "train": "baseline", "finetune": "fine-tuned", "scratch-e": "scratch-E", "scratch-b": "scratch-B",
        "ticket": "winning-ticket", "random-init": "random-init"}
    assert arm("winning-ticket").control == "random-init"
    assert [a.label for a in ARMS if not a.needs_reference] == ["baseline", "winning-ticket", "random-init"]


def test_train_writes_the_registry_label_for_each_stage():
    for a in ARMS:
        assert _arm_label(a.stage) == a.label and arm_for_stage(a.stage) is a
    assert _arm_label("prune") is None


def test_an_unknown_arm_gets_a_did_you_mean():
    with pytest.raises(BadValueError, match="did you mean 'scratch-B'"):
        arm_named("scratch-BB")


def _recipe(**fields):
    return Recipe.from_dict({"name": "r", "dataset": "mnist5k", "model": "lenet5", **fields})


def test_recipe_arms_come_from_the_registry():
    assert _recipe(prune={"method": "weight"}).arms == tuple(a.label for a in recipe_arms("prune"))
    assert _recipe(lottery={"rate": 0.2}).arms == tuple(a.label for a in recipe_arms("lottery"))
    # aliases are accepted and kept as canonical labels, in the registry's order
    assert _recipe(prune={"method": "weight"}, arms=["scratch-b", "ft"]).arms == ("fine-tuned", "scratch-B")


def test_a_recipe_refuses_arms_of_the_other_kind_and_unknown_ones(tmp_path):
    with pytest.raises(BadValueError, match=r"a prune recipe does not run arm\(s\) \['winning-ticket'\]"):
        _recipe(prune={"method": "weight"}, arms=["ticket"])
    with pytest.raises(BadValueError, match="a lottery recipe does not run"):
        _recipe(lottery={"rate": 0.2}, arms=["scratch-B"])
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\ndataset = "mnist5k"\nmodel = "lenet5"\narms = ["scratch-C"]\n'
                   '[prune]\nmethod = "weight"\n')
    with pytest.raises(BadValueError, match="unknown arm 'scratch-C'"):
        load_recipe(bad)
