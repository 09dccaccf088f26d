"""Recipes: one TOML file names an experiment (data, model, baseline, method, arms, seeds); `run_recipe` runs it."""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prunectl import paths
from prunectl.core.hparams import MethodTraining, TrainSpec
from prunectl.core.spec import Spec, check, settings_from
from prunectl.engine.arms import arm_named, recipe_arms
from prunectl.engine.executors.serial import SerialExecutor
from prunectl.engine.train import baseline_spec, method_training
from prunectl.engine.waves import Executor, run_waves
from prunectl.errors import ArtifactError, BadValueError, UnknownNameError
from prunectl.methods import get_method
from prunectl.runs.store import Run
from prunectl.training.trainer import Progress

# `sparsity` is short for [baseline.training] method = "slimming", sparsity = S. The optimiser and schedule keys
# after it override the protocol's (e.g. Soft Filter Pruning's Nesterov momentum and lr 0.01 for one epoch).
OPTIM_KEYS = ("nesterov",)
SCHEDULE_KEYS = ("milestones", "gamma", "warmup_epochs", "warmup_lr")
BASELINE_KEYS = ("epochs", "lr", "batch_size", "weight_decay", "momentum", "sparsity", "training", *OPTIM_KEYS,
                 *SCHEDULE_KEYS)


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
        [baseline.training]   # optional: a method acting during training, and its training settings
        method = "slimming"   # (Network Slimming's `sparsity = 1e-4` directly under [baseline] is the same)
        sparsity = 1e-4
        [prune]               # the method and its settings
        method = "l1-norm"
        ratio = 0.5
        [finetune]            # epochs, lr (default: the protocol's fine-tuning); epochs = 0: the pruned
                              # model itself is the fine-tuned arm (Soft Filter Pruning's hard-pruned model)
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
        kind = "lottery" if self.lottery else "prune"
        allowed = [a.label for a in recipe_arms(kind)]
        try:  # labels or aliases, kept as canonical labels in the registry's order
            given = {arm_named(a).label for a in self.arms} if self.arms else set(allowed)
        except BadValueError as err:
            raise BadValueError(f"recipe '{self.name}': {err}") from None
        wrong = sorted(given - set(allowed))
        check(not wrong, f"recipe '{self.name}': a {kind} recipe does not run arm(s) {wrong}; its arms are "
                         f"{', '.join(allowed)}")
        object.__setattr__(self, "arms", tuple(a for a in allowed if a in given))
        check(bool(self.lottery) or "method" in self.prune, f"recipe '{self.name}': [prune] needs a method")
        if self.prune:
            self.method_settings()  # validates the [prune] table like `prune --set`
        bad = sorted(set(self.baseline) - set(BASELINE_KEYS))
        check(not bad, f"recipe '{self.name}': [baseline] does not take {bad}; it takes {', '.join(BASELINE_KEYS)}")
        if "training" in self.baseline:
            self.baseline_training()  # a bad method or setting is an error when the recipe loads

    def baseline_training(self) -> MethodTraining | None:
        """The `[baseline.training]` table as a validated MethodTraining (None without one)."""
        table = self.baseline.get("training")
        if table is None:
            return None
        check(isinstance(table, Mapping) and isinstance(table.get("method"), str),
              f"recipe '{self.name}': [baseline.training] needs method = \"NAME\" and the method's settings")
        return method_training(table["method"], {k: v for k, v in table.items() if k != "method"})

    def baseline_spec(self, seed: int, data_dir: str | Path | None = None) -> TrainSpec:
        """The spec of this recipe's baseline for one seed: the protocol with [baseline]'s overrides."""
        extra = ("training", *OPTIM_KEYS, *SCHEDULE_KEYS)
        overrides = {k: v for k, v in self.baseline.items() if k not in extra}
        spec = baseline_spec(self.model, self.dataset, seed=seed, data_dir=data_dir, **overrides,
                             training=self.baseline_training(), **dict(self.model_options))
        optim = {k: v for k, v in self.baseline.items() if k in OPTIM_KEYS}
        schedule = {k: tuple(v) if k == "milestones" else v for k, v in self.baseline.items() if k in SCHEDULE_KEYS}
        if optim or schedule:  # defaults are omitted from the spec's JSON: recipes without them keep their ids
            spec = spec.replace(optim=spec.optim.replace(**optim), schedule=spec.schedule.replace(**schedule))
        return spec

    def finetunes_zero_epochs(self) -> bool:
        """`[finetune] epochs = 0`: the fine-tuned arm is the pruned model as it is (no training run)."""
        epochs = self.finetune.get("epochs")
        return isinstance(epochs, int) and not isinstance(epochs, bool) and epochs == 0

    def method_settings(self) -> Spec:
        """The [prune] table (all but `method`) as the method's settings, validated by its dataclass."""
        method = str(self.prune["method"])
        values = {k: v for k, v in self.prune.items() if k != "method"}
        return settings_from(get_method(method).settings, values, f"recipe '{self.name}' [prune]: method '{method}'")


def builtin_recipes() -> list[str]:
    folder = paths.zoo_root() / paths.ZOO_RECIPES
    return sorted(p.stem for p in folder.glob("*.toml")) if folder.is_dir() else []


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
        text = (paths.zoo_root() / paths.ZOO_RECIPES / f"{name_or_path}.toml").read_text()
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
