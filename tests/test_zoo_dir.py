"""Where the zoo lives: the top-level zoo/ folder, found by one function, moved as a whole by $PRUNECTL_ZOO_DIR."""

from __future__ import annotations

import json
import shutil
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from prunectl import paths
from prunectl.cli.app import app
from prunectl.engine import recipe, zoo
from prunectl.errors import UnknownNameError

REPO = Path(__file__).resolve().parent.parent

EXTRA_RECIPE = """\
name = "extra-smallcnn"
dataset = "mnist5k"
model = "smallcnn"
description = "only in the copied zoo"
[prune]
method = "weight"
ratio = 0.3
"""


def test_the_repository_zoo_is_a_real_folder_not_a_symlink():
    top = REPO / "zoo"
    assert top.is_dir() and not top.is_symlink()
    assert not (REPO / "prunectl" / "zoo").exists()  # the data live in one place only
    assert {p.name for p in top.iterdir()} >= {"entries", "weights", "recipes"}


def test_zoo_root_is_the_top_level_folder_for_entries_weights_and_recipes():
    assert paths.zoo_root() == REPO / "zoo"
    assert zoo.zoo_root() == paths.zoo_root()
    assert "quick" in recipe.builtin_recipes()
    assert (paths.zoo_root() / "recipes" / "quick.toml").is_file()
    assert zoo.get_entry("quick-smallcnn-baseline").weights_path == REPO / "zoo" / "weights" / "quick-smallcnn-baseline"


@pytest.fixture()
def copied_zoo(tmp_path, monkeypatch) -> Path:
    """A copy of the shipped zoo with one extra recipe and one entry removed, made the zoo by $PRUNECTL_ZOO_DIR."""
    root = tmp_path / "myzoo"
    shutil.copytree(REPO / "zoo", root)
    (root / "recipes" / "extra-smallcnn.toml").write_text(EXTRA_RECIPE)
    (root / "entries" / "vgg16-a-cifar10.json").unlink()
    monkeypatch.setenv(paths.ZOO_ENV, str(root))
    return root


def test_one_override_moves_recipes_too(copied_zoo):
    assert paths.zoo_root() == copied_zoo
    assert "extra-smallcnn" in recipe.builtin_recipes()
    loaded = recipe.load_recipe("extra-smallcnn")
    assert (loaded.name, loaded.prune["method"], loaded.description) == ("extra-smallcnn", "weight",
                                                                        "only in the copied zoo")
    (copied_zoo / "recipes" / "quick.toml").unlink()
    with pytest.raises(UnknownNameError):
        recipe.load_recipe("quick")  # the shipped recipes are not consulted behind the override


def test_one_override_moves_entries_and_weights(copied_zoo):
    listed = json.loads(_ok("zoo", "list", "--json"))
    names = {e["name"] for e in listed}
    assert "vgg16-a-cifar10" not in names and "quick-smallcnn-baseline" in names
    assert len(names) == len(list((copied_zoo / "entries").glob("*.json")))
    assert zoo.get_entry("quick-smallcnn-baseline").weights_path == copied_zoo / "weights" / "quick-smallcnn-baseline"
    assert recipe.load_recipe(copied_zoo / "recipes" / "extra-smallcnn.toml").name == "extra-smallcnn"


def test_the_wheel_lists_every_package_and_maps_the_zoo():
    """`packages` is an explicit list (a package mapped from another folder defeats `packages.find`), so a new
    package under prunectl/ must be added to pyproject.toml; this fails until it is."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "prunectl").rglob("__init__.py")}
    listed = set(config["packages"])
    assert on_disk <= listed, f"add {sorted(on_disk - listed)} to [tool.setuptools] packages in pyproject.toml"
    assert {p for p in listed if not p.startswith("prunectl.zoo")} <= on_disk, "a listed package no longer exists"
    assert config["package-dir"] == {"prunectl.zoo": "zoo"}
    data = config["package-data"]
    assert data["prunectl.zoo.entries"] == ["*.json"] and data["prunectl.zoo.recipes"] == ["*.toml"]
    assert data["prunectl.zoo.weights"] == ["**/*"]


def _ok(*args: object) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.stdout
