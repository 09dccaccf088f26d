"""Which runs of a store a recipe made: `compare runs/ --recipe NAME` reports those and no others.

A run belongs to a recipe when its id is one the recipe derives: the baseline spec of each seed, the prune of
that baseline with the recipe's method and settings, and each arm derived from that pruned run as the recipe
derives it (its [finetune] / [scratch] settings). Ids are spec hashes, so this holds wherever the runs were copied;
nothing is trained or written. Lottery recipes: the baseline of each seed and every run descending from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from prunectl.engine.arms import recipe_arms
from prunectl.engine.prune import prune_spec
from prunectl.engine.waves import PrunedAsArm, arm_spec, recipe_baseline_spec
from prunectl.runs.store import Run

if TYPE_CHECKING:
    from prunectl.engine.recipe import Recipe


def recipe_members(recipe: Recipe, runs: Sequence[Run], data_dir: str | Path | None = None) -> list[Run]:
    """The runs among `runs` that `recipe` makes (finished or not), in the recipe's order: per seed the
    baseline, then its arms (a fine-tuned arm of 0 epochs is the pruned run itself, as `compare RECIPE` shows it)."""
    by_id = {run.id: run for run in runs}
    members: list[Run] = []
    for seed in recipe.seeds:
        base = by_id.get(recipe_baseline_spec(recipe, seed, data_dir).spec_hash())
        if base is None:
            continue
        members.append(base)
        if recipe.lottery:
            members += [r for r in runs if r is not base and base.id in _ancestors(r)]
            continue
        pruned = by_id.get(prune_spec(base, recipe.prune["method"], recipe.method_settings()).spec_hash())
        if pruned is None or not pruned.is_done():
            continue
        for arm in recipe_arms("prune"):
            if arm.label not in recipe.arms:
                continue
            if arm.derive == "finetune" and recipe.finetunes_zero_epochs():
                members.append(PrunedAsArm(pruned.path, arm.label))
                continue
            found = by_id.get(arm_spec(arm, recipe, base, pruned).spec_hash())
            if found is not None:
                members.append(found)
    return members


def _ancestors(run: Run) -> set[str]:
    return {str(record.get("id")) for record in run.lineage()}
