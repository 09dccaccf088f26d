"""Commands `compare` (fine-tuned vs scratch-E vs scratch-B, tickets vs random init) and `lottery`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from prunectl import paths
from prunectl.cli.executor_options import (
    ArrayParallelismOpt,
    CpusPerJobOpt,
    ExecutorOpt,
    GpusPerJobOpt,
    JobsOpt,
    PartitionOpt,
    SbatchOpt,
    TimeLimitOpt,
    make_executor,
)
from prunectl.cli.options import DataDirOpt, DeviceOpt, JsonOpt, ThreadsOpt, parse_assignments
from prunectl.cli.output import Output, handle_errors
from prunectl.cli.recipes import check_target, is_recipe, paper_reference, with_overrides
from prunectl.core.threads import apply_threads, parse_threads
from prunectl.errors import EXIT_GATE_FAILED, BadValueError

if TYPE_CHECKING:  # the engine imports torch: only the commands' bodies import it, so --help stays fast
    from prunectl.engine.compare import CompareReport

MetricOpt = Annotated[str, typer.Option("--metric", help="final (last epoch, default) or best (selects on the "
                                                         "test set: a known flaw, offered for comparison).")]
GateOpt = Annotated[list[str] | None, typer.Option("--gate", help="A CI condition, e.g. 'scratch-B >= fine-tuned "
                                                                  "- 0.5' (repeatable); exit 1 if one fails.")]
PlotOpt = Annotated[Path | None, typer.Option("--plot", help="Write accuracy vs FLOPs (and vs remaining weights) "
                                                             "to this PNG or SVG file.")]
MarkdownOpt = Annotated[bool, typer.Option("--markdown", help="Print a GitHub markdown table instead.")]
RecipeSetOpt = Annotated[list[str] | None, typer.Option(
    "--set", metavar="KEY=VALUE", help="Override a field of the recipe without copying its file (repeatable; VALUE "
                                       "is JSON): --set dataset=cifar100 --set seeds=[0,1] --set baseline.epochs=2.")]


def register(app: typer.Typer) -> None:
    app.command()(compare)
    app.command()(lottery)


@handle_errors
def compare(
    targets: Annotated[list[str] | None, typer.Argument(help="A recipe (name or .toml) to run and report, or run "
                                                              "directories / folders of runs. Default: quick.")] = None,
    metric: MetricOpt = "final",
    reference: Annotated[str, typer.Option(help="Arm the others are compared with.")] = "fine-tuned",
    gate: GateOpt = None,
    plot_file: PlotOpt = None,
    markdown: MarkdownOpt = False,
    set_: RecipeSetOpt = None,
    dataset: Annotated[str | None, typer.Option("--dataset", "-d", help="Only the runs of this dataset (for a "
                                                                         "store holding several).")] = None,
    only_recipe: Annotated[str | None, typer.Option(
        "--recipe", metavar="RECIPE", help="Only the runs this recipe (name or .toml; with --set) made, among "
                                           "the run folders given (default: the run store); trains nothing.")] = None,
    latency: Annotated[bool, typer.Option("--latency", help="Add a column: each arm's measured forward time "
                                                            "(batch 1, on CPU; median of 10).")] = False,
    data_dir: DataDirOpt = None,
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = None,
    as_json: JsonOpt = False,
    executor: ExecutorOpt = "serial",
    jobs: JobsOpt = 2,
    partition: PartitionOpt = None,
    gpus_per_job: GpusPerJobOpt = 0,
    cpus_per_job: CpusPerJobOpt = 1,
    time_limit: TimeLimitOpt = 24 * 60,
    array_parallelism: ArrayParallelismOpt = None,
    sbatch: SbatchOpt = None,
) -> None:
    """Tabulate the arms over seeds: mean ± std, Δ to the reference with a 95 % CI; run a recipe's missing runs."""
    output = Output(as_json or markdown)
    engine = output.engine()  # torch loads here, under a spinner on a terminal
    apply_threads(threads)  # this process; with --executor local, --threads is each worker's (default cores / jobs)
    from prunectl.engine.compare import find_runs, report

    if only_recipe and not targets and not paths.runs_root().is_dir():
        raise BadValueError(f"the run store {paths.runs_root()} holds no runs yet (run the recipe: prunectl compare "
                            f"{only_recipe})")
    targets = targets or ([str(paths.runs_root())] if only_recipe else ["quick"])
    _preflight(metric, reference, gate, plot_file)
    check_target(targets)
    overrides = parse_assignments(set_)
    if only_recipe and any(is_recipe(t) for t in targets):
        raise BadValueError("--recipe picks a recipe's runs among run folders; to run a recipe, name it alone: "
                            f"prunectl compare {only_recipe}")
    if overrides and not only_recipe and not (len(targets) == 1 and is_recipe(targets[0])):
        raise BadValueError("--set overrides a recipe's fields; name one recipe (see `prunectl recipes`)")
    paper = None
    if len(targets) == 1 and is_recipe(targets[0]):
        recipe = with_overrides(engine.load_recipe(targets[0]), overrides)
        paper = paper_reference(recipe.paper)
        runner = make_executor(executor, data_dir=data_dir, device=device, note=output.note, jobs=jobs,
                               threads=parse_threads(threads, "--threads") if threads is not None else None,
                               partition=partition, gpus_per_job=gpus_per_job, cpus_per_job=cpus_per_job,
                               time_limit=time_limit, array_parallelism=array_parallelism, sbatch=sbatch)
        with output.progress_board() as board:
            made = engine.run_recipe(recipe, data_dir=data_dir, device=device, progress=board,
                                     note=output.note, executor=runner)
        runs = [*made.baselines, *made.arms]  # the baseline is a row of every table
    else:
        runs = find_runs(targets)
        if only_recipe:
            from prunectl.engine.recipe_members import recipe_members

            chosen = with_overrides(engine.load_recipe(only_recipe), overrides)
            paper = paper_reference(chosen.paper)
            runs = recipe_members(chosen, runs, data_dir)
            if not runs:
                raise BadValueError(f"none of these runs was made by recipe '{chosen.name}' (run it: prunectl "
                                    f"compare {only_recipe})")
    from prunectl.core.latency import INFO_LATENCY

    timing = INFO_LATENCY if latency else None
    with output.busy("timing each arm's forward pass…") if latency else _nothing():
        rep = report(runs, metric=metric, reference=reference, gates=gate or (), latency=timing, dataset=dataset)
    _finish(output, rep, plot_file, markdown, paper)


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def _preflight(metric: str, reference: str, gates: list[str] | None, plot_file: Path | None) -> None:
    """The report's options, checked before a recipe trains anything (a typo must not cost a whole recipe)."""
    from prunectl.engine.compare import METRICS, arm_name, parse_gate
    from prunectl.engine.plot import check_plot_path

    if metric not in METRICS:
        raise BadValueError(f"unknown metric '{metric}' (valid: {', '.join(METRICS)})")
    arm_name(reference)
    for text in gates or ():
        parse_gate(text)
    if plot_file is not None:
        check_plot_path(plot_file)


def _finish(output: Output, rep: CompareReport, plot_file: Path | None, markdown: bool,
            paper: dict[str, Any] | None = None) -> None:
    from prunectl.cli.compare_render import render_table, to_markdown
    from prunectl.engine.plot import plot

    if plot_file is not None:
        plot(rep, plot_file)
        output.note(f"plot: {plot_file}")
    if markdown:
        typer.echo(to_markdown(rep, paper).rstrip("\n"))
    else:
        output.emit({**rep.to_dict(), "paper": paper}, lambda c: render_table(c, rep, paper))
    if rep.gates_passed is False:
        raise typer.Exit(EXIT_GATE_FAILED)


@handle_errors
def lottery(
    target: Annotated[str, typer.Argument(help="A baseline run trained with --save-init, or a lottery recipe.")],
    rate: Annotated[float, typer.Option(help="Fraction of the remaining weights removed per round.")] = 0.2,
    rounds: Annotated[int, typer.Option(help="Pruning rounds.")] = 3,
    target_sparsity: Annotated[float | None, typer.Option(help="One-shot to this sparsity instead.")] = None,
    structure: Annotated[str, typer.Option(help="weight (unstructured) or filter (L1-norm filter masks).")] = "weight",
    include_linear: Annotated[bool, typer.Option(help="Prune linear layers too.")] = False,
    rewind: Annotated[str, typer.Option(help="init, epoch:K (late rewinding) or finetune.")] = "init",
    set_: RecipeSetOpt = None,
    metric: MetricOpt = "final",
    gate: GateOpt = None,
    plot_file: PlotOpt = None,
    markdown: MarkdownOpt = False,
    data_dir: DataDirOpt = None,
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Winning ticket vs random initialisation, round by round (iterative magnitude pruning with rewinding)."""
    output = Output(as_json or markdown)
    engine = output.engine()  # torch loads here, under a spinner on a terminal
    apply_threads(threads)
    from prunectl.engine.compare import report
    from prunectl.engine.lottery import LotterySettings
    from prunectl.engine.lottery import lottery as run_lottery

    _preflight(metric, "random-init", gate, plot_file)
    with output.progress_board() as board:
        if is_recipe(target):
            recipe = with_overrides(engine.load_recipe(target), parse_assignments(set_))
            runs = engine.run_recipe(recipe, data_dir=data_dir, device=device, progress=board,
                                     note=output.note).arms
        else:
            settings = LotterySettings(rate=rate, rounds=rounds, target_sparsity=target_sparsity,
                                       structure=structure, include_linear=include_linear, rewind=rewind)
            runs = run_lottery(engine.resolve_run(target), settings, data_dir=data_dir, device=device,
                               progress=board, note=output.note).arm_runs()
    _finish(output, report(runs, metric=metric, reference="random-init", gates=gate or ()), plot_file, markdown)
