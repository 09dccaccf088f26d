"""Recipes: one TOML file names an experiment (data, model, baseline, method, arms, seeds); `run_recipe` runs it."""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from prunectl.core.spec import Spec, check
from prunectl.engine.executors.serial import SerialExecutor
from prunectl.engine.waves import Executor, run_waves
from prunectl.errors import ArtifactError, UnknownNameError
from prunectl.runs.store import Run
from prunectl.training.trainer import Progress

ARMS = ("fine-tuned", "scratch-E", "scratch-B")
LOTTERY_ARMS = ("winning-ticket", "random-init")
BASELINE_KEYS = ("epochs", "lr", "batch_size", "weight_decay", "momentum", "sparsity")


@dataclass(frozen=True)
class Recipe(Spec):
    """One experiment of the paper's protocol. Example (`prunectl compare quick` runs the shipped one)::

        name = "quick"
        dataset = "mnist5k"
        model = "smallcnn"
        seeds = [0, 1, 2]
        arms = ["fine-tuned", "scratch-E", "scratch-B"]
        [baseline]            # overrides of the dataset's protocol: epochs, lr, batch_size, weight_decay, ...
        epochs = 8
        [prune]               # the method and its settings
        method = "l1-norm"
        ratio = 0.5
        [finetune]            # epochs, lr (default: the protocol's fine-tuning)
        [scratch]             # add_finetune_epochs = true adds the fine-tune epochs to the budget

    A lottery recipe has a `[lottery]` table (LotterySettings: rate, rounds, structure, rewind, ...) instead of
    `[prune]`, and the arms winning-ticket and random-init.
    """

    name: str
    dataset: str
    model: str
    prune: Mapping[str, Any] = field(default_factory=dict)
    lottery: Mapping[str, Any] = field(default_factory=dict)
    seeds: tuple[int, ...] = (0,)
    arms: tuple[str, ...] = ()
    baseline: Mapping[str, Any] = field(default_factory=dict)
    model_options: Mapping[str, Any] = field(default_factory=dict)
    finetune: Mapping[str, Any] = field(default_factory=dict)
    scratch: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    paper: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check(len(self.seeds) >= 1, f"recipe '{self.name}' needs at least one seed")
        check(len(set(self.seeds)) == len(self.seeds), f"recipe '{self.name}' repeats a seed")
        check(bool(self.prune) != bool(self.lottery), f"recipe '{self.name}' needs either [prune] or [lottery]")
        allowed = LOTTERY_ARMS if self.lottery else ARMS
        if not self.arms:
            object.__setattr__(self, "arms", allowed)
        unknown = [a for a in self.arms if a not in allowed]
        check(not unknown, f"recipe '{self.name}': unknown arm(s) {unknown}; arms are {', '.join(allowed)}")
        check(bool(self.lottery) or "method" in self.prune, f"recipe '{self.name}': [prune] needs a method")
        bad = sorted(set(self.baseline) - set(BASELINE_KEYS))
        check(not bad, f"recipe '{self.name}': [baseline] does not take {bad}; it takes {', '.join(BASELINE_KEYS)}")


def builtin_recipes() -> list[str]:
    folder = resources.files("prunectl") / "zoo" / "recipes"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def load_recipe(name_or_path: str | Path) -> Recipe:
    """A shipped recipe by name (`quick`, `vgg16-a-cifar10`, ...) or a TOML file."""
    path = Path(name_or_path).expanduser()
    if path.suffix == ".toml" or path.is_file():
        if not path.is_file():
            raise ArtifactError(f"no recipe file at {path}")
        text = path.read_text()
    else:
        if str(name_or_path) not in builtin_recipes():
            raise UnknownNameError("recipe", str(name_or_path), builtin_recipes())
        text = (resources.files("prunectl") / "zoo" / "recipes" / f"{name_or_path}.toml").read_text()
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ArtifactError(f"recipe {name_or_path} is not valid TOML: {err}") from None
    data.setdefault("name", path.stem)
    return Recipe.from_dict(data)


@dataclass
class RecipeRuns:
    """The runs of a recipe: baselines and pruned models per seed, and the arm runs that `compare` reports."""

    baselines: list[Run] = field(default_factory=list)
    pruned: list[Run] = field(default_factory=list)
    arms: list[Run] = field(default_factory=list)


def run_recipe(recipe: Recipe, *, data_dir: str | Path | None = None, device: str | None = None,
               progress: Callable[[str], Callable[[Progress], None] | None] | None = None,
               note: Callable[[str], None] = lambda message: None, executor: Executor | None = None) -> RecipeRuns:
    """Run whatever is missing (finished runs come back from the run store at once).

    Per seed: baseline → prune → fine-tune, and the pruned architecture re-initialised and trained for the
    baseline's epochs (scratch-E) and FLOPs budget (scratch-B). `progress(label)` gives a trainer callback.
    `executor` runs each dependency wave (baselines, prunes, arms; engine/waves.py); the default runs
    everything in this process, one seed after the other.
    """
    if executor is None:
        executor = SerialExecutor(data_dir=data_dir, device=device, progress=progress, note=note)
    return run_waves(recipe, executor, RecipeRuns(), data_dir=data_dir, device=device, progress=progress, note=note)
