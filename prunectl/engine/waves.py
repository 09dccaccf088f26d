"""A recipe's runs as dependency waves: the baselines (one per seed), then the prunes, then the arms.

Each wave's specs are derived once the previous wave has finished (an arm's spec needs the pruned run's
architecture and FLOPs), and the runs of one wave are independent, so an executor may run them at once. The
serial executor takes one seed at a time, which is the order `run_recipe` always ran them in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from prunectl.core.hparams import TrainSpec
from prunectl.core.units import si_count
from prunectl.engine.arms import Arm, recipe_arms
from prunectl.engine.derive import finetune_spec, scratch_spec
from prunectl.engine.lottery import LotterySettings, lottery
from prunectl.engine.prune import prune_spec
from prunectl.errors import ArtifactError
from prunectl.runs.store import Run, prepare_run
from prunectl.training.trainer import Progress

if TYPE_CHECKING:
    from prunectl.engine.recipe import Recipe, RecipeRuns

_BAR_LABELS = {"fine-tuned": "fine-tune"}


@dataclass(frozen=True)
class PrunedAsArm(Run):
    """A pruned run counted as an arm without further training (a recipe fine-tuning 0 epochs): compare sees
    its accuracy straight after pruning, 0 epochs, and the pruning as its level. The run itself is unchanged,
    so the same pruned run in another recipe is no arm there."""

    arm: str = "fine-tuned"

    def result(self) -> dict[str, Any]:
        result = super().result()
        spec = self.record["spec"]
        return {**result, "arm": self.arm, "epochs": 0, "zero_epoch_arm": True,
                "level": {"method": spec["method"], **spec["settings"]}}


@dataclass(frozen=True)
class Job:
    """One run to execute: its prepared directory (spec.json written) and a label for people."""

    run: Run
    label: str


class Executor(Protocol):
    """Runs the jobs of one wave; returns when every job is done, raises RunsFailedError naming those that are not."""

    one_seed_at_a_time: bool

    def run_wave(self, name: str, jobs: Sequence[Job]) -> None: ...

    def close(self) -> None:
        """Release what the executor holds between waves (worker processes); it may be used again after."""


def recipe_baseline_spec(recipe: Recipe, seed: int, data_dir: str | Path | None) -> TrainSpec:
    """The baseline a recipe trains for `seed` (a lottery recipe's also saves its init and snapshots)."""
    spec = recipe.baseline_spec(seed, data_dir)
    if recipe.lottery:
        settings = LotterySettings.from_dict(recipe.lottery)
        spec = spec.replace(save_init=True, snapshot_epochs=settings.snapshot_epochs())
    return spec


def baseline_job(recipe: Recipe, seed: int, data_dir: str | Path | None) -> Job:
    spec = recipe_baseline_spec(recipe, seed, data_dir)
    return Job(prepare_run(spec, spec.stage), f"seed {seed} baseline")


def prune_job(recipe: Recipe, base: Run) -> Job:
    spec = prune_spec(base, recipe.prune["method"], recipe.method_settings())
    return Job(prepare_run(spec, "prune"), f"seed {spec.seed} prune")


def zero_epoch_arms(recipe: Recipe, pruned: Run) -> list[PrunedAsArm]:
    """Arms that are the pruned model itself: a fine-tuned arm of a recipe that fine-tunes 0 epochs (e.g. SFP,
    whose model is trained while it is pruned)."""
    if not recipe.finetunes_zero_epochs():
        return []
    return [PrunedAsArm(pruned.path, a.label) for a in recipe_arms("prune")
            if a.label in recipe.arms and a.derive == "finetune"]


def prune_summary(result: dict[str, Any]) -> str:
    """One line for people from a prune run's result.json.

    >>> prune_summary({"method": "l1-norm", "flops_before": 2e6, "flops": 1e6, "params_before": 4e4,
    ...                "params": 1e4, "pruned_acc": 91.25})
    'done, l1-norm: FLOPs 2.00M -> 1.00M (-50.0 %), params 40.00K -> 10.00K, accuracy straight after pruning 91.25 %'
    """
    flops, before = float(result["flops"]), float(result["flops_before"])
    text = (f"done, {result['method']}: FLOPs {si_count(before)} -> {si_count(flops)} ({(flops / before - 1) * 100:+.1f} %), "
            f"params {si_count(float(result['params_before']))} -> {si_count(float(result['params']))}")
    if result.get("pruned_acc") is not None:
        text += f", accuracy straight after pruning {float(result['pruned_acc']):.2f} %"
    return text


def arm_jobs(recipe: Recipe, base: Run, pruned: Run) -> list[Job]:
    """The arm runs to train for one pruned model, in the arm registry's order (fine-tuned, scratch-E, scratch-B)."""
    seed = base.spec().seed  # type: ignore[attr-defined]
    jobs = []
    for arm in recipe_arms("prune"):
        if arm.label not in recipe.arms or (arm.derive == "finetune" and recipe.finetunes_zero_epochs()):
            continue
        spec = arm_spec(arm, recipe, base, pruned)
        jobs.append(Job(prepare_run(spec, spec.stage), f"seed {seed} {_BAR_LABELS.get(arm.label, arm.label)}"))
    return jobs


def arm_spec(arm: Arm, recipe: Recipe, baseline: Run, pruned: Run) -> TrainSpec:
    """The spec of one arm of a prune recipe, by the arm's `derive` (see `prunectl.engine.arms.Arm`)."""
    if arm.derive == "finetune":
        return finetune_spec(pruned, **dict(recipe.finetune))
    if arm.derive == "scratch":
        return scratch_spec(pruned, baseline, budget=str(arm.budget), **dict(recipe.scratch))
    raise ArtifactError(f"recipe '{recipe.name}': no way to derive arm {arm.label} ({arm.derive})")


def run_waves(recipe: Recipe, executor: Executor, out: RecipeRuns, *, data_dir: str | Path | None = None,
              device: str | None = None,
              progress: Callable[[str], Callable[[Progress], None] | None] | None = None,
              note: Callable[[str], None] = lambda message: None) -> RecipeRuns:
    """Run whatever is missing of `recipe` through `executor`, filling `out` seed by seed in the recipe's order.

    Lottery recipes: the baselines go through the executor; the rounds (prune → ticket and random-init, each
    round's parent the last ticket) then run in this process, one seed after the other.
    """
    groups = [[s] for s in recipe.seeds] if executor.one_seed_at_a_time else [list(recipe.seeds)]
    try:
        for seeds in groups:
            _run_group(recipe, seeds, executor, out, data_dir=data_dir, device=device, progress=progress,
                       note=note)
    finally:
        executor.close()
    return out


def _run_group(recipe: Recipe, seeds: list[int], executor: Executor, out: RecipeRuns, *,
               data_dir: str | Path | None, device: str | None,
               progress: Callable[[str], Callable[[Progress], None] | None] | None,
               note: Callable[[str], None]) -> None:
    """The waves of `seeds`: baselines, then the prunes, then the arms (lottery: the rounds, per seed)."""
    bases = [baseline_job(recipe, seed, data_dir) for seed in seeds]
    executor.run_wave("baselines", bases)
    out.baselines.extend(job.run for job in bases)
    if recipe.lottery:
        settings = LotterySettings.from_dict(recipe.lottery)
        for seed, job in zip(seeds, bases, strict=True):
            def bar(label: str, seed: int = seed) -> Callable[[Progress], None] | None:
                return progress(f"seed {seed} {label}") if progress else None

            runs = lottery(job.run, settings, data_dir=data_dir, device=device, progress=bar, note=note)
            out.pruned.extend(r.pruned for r in runs.rounds)
            out.arms.extend(runs.arm_runs())
        return
    prunes = [prune_job(recipe, job.run) for job in bases]
    executor.run_wave("prunes", prunes)
    out.pruned.extend(job.run for job in prunes)
    arms = [arm_jobs(recipe, b.run, p.run) for b, p in zip(bases, prunes, strict=True)]
    executor.run_wave("arms", [job for per_seed in arms for job in per_seed])
    for prune, per_seed in zip(prunes, arms, strict=True):
        as_pruned = zero_epoch_arms(recipe, prune.run)
        out.arms.extend([*as_pruned, *(job.run for job in per_seed)])
        if as_pruned and prune is prunes[0] and seeds[0] == recipe.seeds[0]:
            note(f"{as_pruned[0].arm}: the {recipe.prune['method']} model as pruned, not trained further "
                 "([finetune] epochs = 0); its accuracy is the one straight after pruning")
