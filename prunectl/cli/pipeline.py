"""Commands `prune`, `extract-arch`, `finetune` and `scratch`: the stages of the paper's protocol."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from prunectl import engine
from prunectl.cli.basics import render_result
from prunectl.cli.options import (
    CompileOpt,
    DataDirOpt,
    DeviceOpt,
    JsonOpt,
    OutOpt,
    PrecisionOpt,
    SetOpt,
    ThreadsOpt,
    parse_assignments,
)
from prunectl.cli.output import Output, handle_errors
from prunectl.core.flops import FLOPS_LABEL
from prunectl.core.threads import apply_threads
from prunectl.errors import BadValueError
from prunectl.methods import list_methods

# prune's options that are shortcuts for one method setting each (--set sets any setting).
SHORTCUTS = {"ratio": "--ratio", "variant": "--variant", "layer_ratios": "--layer-ratio",
             "min_channels": "--min-channels", "include_linear": "--include-linear"}
RunArg = Annotated[str, typer.Argument(help="A run directory, or zoo:NAME for a zoo entry with weights.")]


def register(app: typer.Typer) -> None:
    app.command()(prune)
    app.command("extract-arch")(extract_arch)
    app.command()(finetune)
    app.command()(scratch)


@handle_errors
def prune(
    run: RunArg,
    method: Annotated[str, typer.Option("--method", "-M", help=f"One of: {', '.join(list_methods())} (see "
                                                              "`prunectl methods NAME` for its settings).")],
    ratio: Annotated[float | None, typer.Option(help="Shortcut for --set ratio=R: the fraction to prune (l1-norm "
                                                     "uniform ratio; slimming's percent; weight-level sparsity).")] = None,
    set_: SetOpt = None,
    variant: Annotated[str | None, typer.Option(help="Shortcut for --set variant=V (l1-norm: A or B).")] = None,
    layer_ratio: Annotated[list[str] | None, typer.Option(help="Shortcut for --set layer_ratios={...} (l1-norm): "
                                                          "NAME=R, repeatable.")] = None,
    min_channels: Annotated[int | None, typer.Option(help="Shortcut for --set min_channels=N (slimming).")] = None,
    include_linear: Annotated[bool, typer.Option(help="Shortcut for --set include_linear=true (weight).")] = False,
    out: OutOpt = None,
    data_dir: DataDirOpt = None,
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Prune a trained run: a smaller dense network (structured) or a mask (weight-level).

    Any setting of the method: --set KEY=VALUE (repeatable; VALUE is JSON), e.g. --set skip=[16,20].
    """
    apply_threads(threads)
    output = Output(as_json)
    shortcuts: dict[str, Any] = {k: v for k, v in {"ratio": ratio, "variant": variant,
                                                    "min_channels": min_channels}.items() if v is not None}
    if layer_ratio:
        shortcuts["layer_ratios"] = dict(_pair(item) for item in layer_ratio)
    if include_linear:
        shortcuts["include_linear"] = True
    settings = parse_assignments(set_)
    both = sorted(set(settings) & set(shortcuts))
    if both:
        raise BadValueError(f"{both[0]} is given twice, by --set and by {SHORTCUTS[both[0]]}; give one of them")
    baseline = engine.resolve_run(run)
    spec = engine.prune_spec(baseline, method, {**shortcuts, **settings})
    pruned = engine.prune(baseline, spec, out=out, data_dir=data_dir, device=device, note=output.note)
    result = pruned.result()
    output.emit({**result, "run": str(pruned.path)}, lambda c: _render_prune(c, result, str(pruned.path)))


def _pair(item: str) -> tuple[str, float]:
    name, sep, value = item.partition("=")
    try:
        return name, float(value) if sep else float("nan")
    except ValueError:
        raise BadValueError(f"--layer-ratio takes NAME=RATIO, got '{item}'") from None


def _render_prune(console: Console, result: dict, path: str) -> None:
    table = Table(title=f"{result['method']} → {result['arch']}", show_header=True)
    for col in ("", "before", "after", "ratio"):
        table.add_column(col, justify="right")
    table.add_row("params", f"{result['params_before']:,}", f"{result['params']:,}", f"{result['params_ratio']:.2f}×")
    table.add_row(FLOPS_LABEL, f"{result['flops_before']:,}", f"{result['flops']:,}", f"{result['flops_ratio']:.2f}×")
    console.print(table)
    console.print(f"test accuracy straight after pruning (no fine-tuning): {result['pruned_acc']:.2f}%")
    console.print(f"run: {path}")


@handle_errors
def extract_arch(
    run: RunArg,
    output_file: Annotated[Path | None, typer.Option("--output", "-o", help="Write the architecture JSON here "
                                                     "(a weight-level mask goes beside it).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """The pruned architecture as data (and the mask, for weight-level pruning)."""
    written = engine.extract_arch(engine.resolve_run(run), output_file)
    output = Output(as_json or output_file is None)
    output.emit(written if output_file is not None else written["arch"], lambda c: c.print(
        f"architecture: {written['arch_file']}" + (f"\nmask: {written['mask_file']}" if written["mask_file"] else "")))


@handle_errors
def finetune(
    run: RunArg,
    epochs: Annotated[int | None, typer.Option(help="Default: the protocol's (CIFAR 40; ImageNet by method).")] = None,
    lr: Annotated[float | None, typer.Option(help="Constant learning rate (default 0.001).")] = None,
    out: OutOpt = None,
    data_dir: DataDirOpt = None,
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = None,
    precision: PrecisionOpt = "fp32",
    compile_: CompileOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Fine-tune a pruned run with its inherited weights (mask kept for weight-level)."""
    apply_threads(threads)
    output = Output(as_json)
    pruned = engine.resolve_run(run)
    spec = engine.finetune_spec(pruned, epochs=epochs, lr=lr).replace(precision=precision, compile=compile_)
    with output.training_progress("finetune") as progress:
        done = engine.train(spec, out=out, parent=pruned, data_dir=data_dir, device=device, progress=progress)
    result = done.result()
    output.emit({**result, "run": str(done.path)}, lambda c: render_result(c, result, str(done.path)))


@handle_errors
def scratch(
    source: Annotated[str, typer.Argument(help="A pruned run directory, an architecture JSON file, or zoo:NAME.")],
    reference: Annotated[str, typer.Option("--reference", "-r", help="The baseline run or zoo:NAME (its epochs, "
                                                                     "optimiser, FLOPs).")],
    budget: Annotated[str, typer.Option("--budget", "-b", help="E: same epochs; B: same FLOPs budget.")] = "B",
    seed: Annotated[int | None, typer.Option(help="Default: the reference's seed.")] = None,
    add_finetune_epochs: Annotated[bool, typer.Option(help="Count the fine-tune epochs into the budget.")] = False,
    out: OutOpt = None,
    data_dir: DataDirOpt = None,
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = None,
    precision: PrecisionOpt = "fp32",
    compile_: CompileOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Train a pruned architecture from a random initialisation: scratch-E or scratch-B."""
    apply_threads(threads)
    output = Output(as_json)
    src, parent = engine.resolve_source(source)
    spec = engine.scratch_spec(parent or src, engine.resolve_run(reference), budget=budget, seed=seed,
                               add_finetune_epochs=add_finetune_epochs, method=engine.source_method(source))
    spec = spec.replace(precision=precision, compile=compile_)
    b = spec.budget
    output.note(f"scratch-{b['budget']}: {b['rule']} epochs (FLOPs {b['flops_reference']:,} / {b['flops_pruned']:,}"
                f"{', sparse-aware' if b['sparse_flops'] else ''}; lr steps at {spec.schedule.milestone_epochs()})")
    with output.training_progress(f"scratch-{b['budget']}") as progress:
        done = engine.train(spec, out=out, parent=parent, data_dir=data_dir, device=device, progress=progress)
    result = done.result()
    output.emit({**result, "run": str(done.path), "budget": b}, lambda c: render_result(c, result, str(done.path)))
