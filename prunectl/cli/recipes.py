"""Command `recipes`: the shipped experiments; and `--set` overrides of a recipe's fields for `compare`/`lottery`."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.table import Table

from prunectl.cli.options import JsonOpt
from prunectl.cli.output import Output, handle_errors
from prunectl.errors import BadValueError, PrunectlError, UnknownNameError

if TYPE_CHECKING:
    from prunectl.engine.recipe import Recipe


def register(app: typer.Typer) -> None:
    app.command("recipes")(recipes_)


@handle_errors
def recipes_(as_json: JsonOpt = False) -> None:
    """List the shipped recipes (run one with `prunectl compare NAME`; adapt it with --set KEY=VALUE)."""
    output = Output(as_json)
    output.engine()
    from prunectl.engine.recipe import builtin_recipes, load_recipe

    rows = [_row(load_recipe(name)) for name in builtin_recipes()]
    output.emit(rows, lambda c: _render(c, rows))


def _row(recipe: Recipe) -> dict[str, Any]:
    method = recipe.prune.get("method") if recipe.prune else "lottery"
    return {"name": recipe.name, "description": recipe.description, "dataset": recipe.dataset,
            "model": recipe.model, "method": method, "arms": list(recipe.arms), "seeds": list(recipe.seeds),
            "source": recipe.paper.get("source")}


def _render(console: Console, rows: list[dict[str, Any]]) -> None:
    table = Table(title="recipes (prunectl compare NAME runs one; --set dataset=... --set seeds=[0,1] adapts it)")
    for col in ("name", "seeds", "description"):
        table.add_column(col, overflow="fold", no_wrap=col == "name")
    for r in rows:
        table.add_row(r["name"], str(len(r["seeds"])), r["description"])
    console.print(table)


def paper_reference(paper: Mapping[str, Any]) -> dict[str, Any] | None:
    """The paper's numbers a recipe's `[paper]` table gives, as `compare` shows them: `[paper.accuracy]` maps an
    arm (name or alias) to its top-1 % in the cited table. None when the recipe gives no numbers."""
    accuracy = paper.get("accuracy")
    if not isinstance(accuracy, Mapping) or not accuracy:
        return None
    from prunectl.engine.compare import arm_name

    values = {arm_name(str(arm)): float(value) for arm, value in accuracy.items()
              if isinstance(value, int | float) and not isinstance(value, bool)}
    return {"source": paper.get("source"), "accuracy": values} if values else None


def is_recipe(target: str) -> bool:
    """A shipped recipe's name or a .toml file (anything else is a run directory or a folder of runs)."""
    from prunectl.engine.recipe import builtin_recipes

    return target in builtin_recipes() or target.endswith(".toml")


def check_target(targets: list[str]) -> None:
    """A single target that is neither a recipe nor an existing path is most likely a misspelt recipe."""
    from prunectl.engine.recipe import builtin_recipes

    if len(targets) == 1 and not is_recipe(targets[0]) and not targets[0].startswith("zoo:") \
            and not Path(targets[0]).expanduser().exists():
        err = UnknownNameError("recipe", targets[0], builtin_recipes())
        raise BadValueError(f"{err} — and no run directory of that name exists; `prunectl recipes` lists them")


def with_overrides(recipe: Recipe, values: Mapping[str, Any]) -> Recipe:
    """The recipe with `--set` values replacing its fields, validated by the Recipe dataclass as if the file said
    so: `seeds=[0,1]`, `dataset="cifar100"`, a table's key by a dotted name (`baseline.epochs=2`, `prune.ratio=0.3`).

    The run ids follow the specs, so overridden runs never collide with the file's.
    """
    if not values:
        return recipe
    fields = {f.name for f in dataclasses.fields(recipe)}
    data = recipe.to_dict()
    for key, value in values.items():
        top, _, sub = key.partition(".")
        if top not in fields or top == "name":
            raise BadValueError(f"--set {key}: a recipe has no field '{top}' (it has "
                                f"{', '.join(sorted(fields - {'name'}))})")
        if sub:
            if not isinstance(data.get(top), Mapping):
                raise BadValueError(f"--set {key}: '{top}' is not a table of the recipe")
            data[top] = {**data[top], sub: value}
        else:
            data[top] = value
    from prunectl.engine.recipe import Recipe as RecipeClass

    try:
        return RecipeClass.from_dict(data)
    except PrunectlError as err:
        raise BadValueError(f"--set {', '.join(values)}: {err}") from None
