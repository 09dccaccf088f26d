"""Commands `train`, `info`, `models` and `datasets`: thin wrappers over the engine."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from prunectl.cli.options import (
    CompileOpt,
    DataDirOpt,
    DatasetOpt,
    DeviceOpt,
    DownloadOpt,
    JsonOpt,
    OutOpt,
    PrecisionOpt,
    SeedOpt,
    SetOpt,
    ThreadsOpt,
    parse_assignments,
    protocol_default,
)
from prunectl.cli.output import FLOPS_LABEL, Output, handle_errors
from prunectl.core.hparams import MethodTraining
from prunectl.core.threads import apply_threads
from prunectl.errors import BadValueError


def register(app: typer.Typer) -> None:
    for command in (train, info):
        app.command()(command)
    app.command("models")(models_)
    app.command("datasets")(datasets_)


@handle_errors
def train(
    model: Annotated[str, typer.Option("--model", "-m", help="Registered model name (see `prunectl models`).")],
    dataset: DatasetOpt = "mnist5k",
    epochs: Annotated[int | None, typer.Option(help="Epochs (default: the dataset's protocol: "
                                               f"{protocol_default('epochs')}).")] = None,
    lr: Annotated[float | None, typer.Option(help=f"Initial learning rate (default: {protocol_default('lr')}).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size (default: "
                                                   f"{protocol_default('batch_size')}).")] = None,
    weight_decay: Annotated[float | None, typer.Option(help="Weight decay (default: protocol).")] = None,
    momentum: Annotated[float | None, typer.Option(help="SGD momentum (default: protocol).")] = None,
    model_option: Annotated[list[str] | None, typer.Option("--model-option", help="Model option KEY=VALUE, e.g. "
                                                           "head=l1 (VALUE read as JSON when it parses; repeatable).")] = None,
    seed: SeedOpt = 0,
    method: Annotated[str | None, typer.Option("--method", help="Train with this pruning method's training "
                                               "behaviour (e.g. slimming); its settings via --set.")] = None,
    set_: SetOpt = None,
    sparsity: Annotated[float, typer.Option(help="Network Slimming's L1 penalty on BN scales, e.g. 1e-4: short "
                                            "for --method slimming --set sparsity=S.")] = 0.0,
    save_init: Annotated[bool, typer.Option(help="Keep the initial weights (for lottery tickets).")] = False,
    snapshot_epochs: Annotated[list[int] | None, typer.Option("--snapshot-epochs", help="Keep the weights after "
                                                              "epoch K (late rewinding; repeatable).")] = None,
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = None,
    precision: PrecisionOpt = "fp32",
    compile_: CompileOpt = False,
    out: OutOpt = None,
    data_dir: DataDirOpt = None,
    download: DownloadOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Train a baseline with the dataset's paper protocol (CIFAR: 160 epochs, lr 0.1, steps at 50 % / 75 %),
    plain or with a method acting during training (--method NAME --set KEY=VALUE; --sparsity S is the same run
    as --method slimming --set sparsity=S)."""
    output = Output(as_json)
    engine = output.engine()  # torch loads here, under a spinner on a terminal
    apply_threads(threads)
    settings = parse_assignments(set_)
    if settings and method is None:
        raise BadValueError("--set gives settings of a training method; name it with --method")
    training = MethodTraining(method, settings) if method is not None else None
    spec = engine.baseline_spec(model, dataset, epochs=epochs, lr=lr, batch_size=batch_size,
                                weight_decay=weight_decay, momentum=momentum, seed=seed, sparsity=sparsity,
                                training=training, data_dir=data_dir, **_options(model_option or []))
    spec = spec.replace(save_init=save_init, snapshot_epochs=tuple(sorted(set(snapshot_epochs or ()))),
                        precision=precision, compile=compile_)
    with output.training_progress(f"train {model}") as progress:
        run = engine.train(spec, out=out, data_dir=data_dir, download=download, device=device, progress=progress,
                           note=output.note)
    result = run.result()
    output.emit({**result, "run": str(run.path)}, lambda c: render_result(c, result, str(run.path)))


def _options(items: list[str]) -> dict[str, Any]:
    """KEY=VALUE pairs; VALUE is JSON where it parses (numbers, lists), else a string."""
    options: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise BadValueError(f"--model-option takes KEY=VALUE, got '{item}'")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def render_result(console: Console, result: dict, path: str) -> None:
    table = Table(show_header=False, box=None)
    for key, label in [("final_acc", "test accuracy (last epoch) %"), ("best_acc", "best test accuracy %"),
                       ("epochs", "epochs"), ("params", "params"), ("flops", FLOPS_LABEL),
                       ("wall_seconds", "wall seconds")]:
        value = result.get(key)
        table.add_row(label, f"{value:,.2f}" if isinstance(value, float) else f"{value:,}")
    console.print(table)
    console.print(f"run: {path}")


@handle_errors
def info(
    target: Annotated[str, typer.Argument(help="Model name, architecture JSON file, run directory, or zoo:NAME.")],
    dataset: Annotated[str | None, typer.Option("--dataset", "-d", help="Size the model for this dataset.")] = None,
    latency: Annotated[bool, typer.Option("--latency", help="Also time the forward pass (median of 10 after 3 "
                                                            "warm-up passes, inference mode, random input).")] = False,
    batch_sizes: Annotated[str, typer.Option("--batch-sizes", metavar="N,N,...",
                                             help="Batch sizes --latency times.")] = "1,16,64",
    device: Annotated[str, typer.Option("--device", help="Where --latency runs: cpu, cuda, cuda:N or auto "
                                                         "(CUDA when present).")] = "cpu",
    threads: ThreadsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Parameters, FLOPs (fvcore multiply-adds of conv and linear layers), a per-layer table, and with --latency
    the measured forward time (FLOPs dropping does not by itself make a network faster)."""
    output = Output(as_json)
    engine = output.engine()  # torch loads here, under a spinner on a terminal
    apply_threads(threads)
    from dataclasses import replace

    from prunectl.core.latency import INFO_LATENCY, parse_batch_sizes

    settings = replace(INFO_LATENCY, batch_sizes=parse_batch_sizes(batch_sizes)) if latency else None
    with output.busy("timing the forward pass…") if latency else _quiet():
        report = engine.info(target, dataset, latency=settings, device=device)
    output.emit(report, lambda c: _render_info(c, report))


def _render_info(console: Console, report: dict) -> None:
    table = Table(title=f"{report['name'] or report['target']} ({report['family']}), input "
                        f"{tuple(report['input_size'])}, {report['num_classes']} classes")
    for col in ("layer", "type", "shape", "params", "FLOPs", "density"):
        table.add_column(col, justify="right" if col in ("params", "FLOPs", "density") else "left")
    for row in report["layers"]:
        table.add_row(row["name"], row["type"], row["shape"], f"{row['params']:,}", f"{row['flops']:,}",
                      f"{row['density']:.3f}")
    console.print(table)
    console.print(f"params: {report['params']:,}    {FLOPS_LABEL}: {report['flops']:,}")
    if report.get("latency"):
        console.print(latency_text(report["latency"]))
    if report.get("groups"):
        groups = Table(title="channel groups (traced: coupled layers pruned together)")
        for col in ("group", "channels", "tie", "producers", "norms", "consumers"):
            groups.add_column(col, justify="right" if col in ("channels", "norms", "consumers") else "left")
        for g in report["groups"]:
            shown = g["producers"][0] + (f" +{len(g['producers']) - 1}" if len(g["producers"]) > 1 else "")
            groups.add_row(g["name"], str(g["channels"]), g["tie"], shown, str(g["norms"]), str(g["consumers"]))
        console.print(groups)
    if report.get("protocol"):
        console.print(f"training protocol: {report['protocol']['name']} ({report['protocol']['why']})")
    if report.get("blocks"):
        console.print(f"residual branches per stage (kept, first kept): {report['blocks']['notation']}")


def latency_text(lat: dict[str, Any]) -> str:
    """`latency (cpu, 2 threads, median of 10): batch 1 0.41 ms; batch 16 3.20 ms (0.200 ms/image)`."""
    where = lat["device"] + (f", {lat['threads']} threads" if lat.get("threads") else "")
    rows = "; ".join(f"batch {r['batch']} {r['median_ms']:.2f} ms" + (f" ({r['per_image_ms']:.3f} ms/image)"
                                                                        if r["batch"] > 1 else "")
                     for r in lat["rows"])
    return f"latency ({where}, median of {lat['repeats']}): {rows}"


@contextmanager
def _quiet() -> Iterator[None]:
    yield


@handle_errors
def models_(pattern: Annotated[str, typer.Argument(help="Glob, e.g. 'resnet*'.")] = "*",
            all_: Annotated[bool, typer.Option("--all", help="Also the torchvision:NAME and timm:NAME models "
                                                              "(timm: with the prunectl[timm] extra).")] = False,
            as_json: JsonOpt = False) -> None:
    """List registered model names (--all: also the torchvision and timm models they accept)."""
    from prunectl.models import list_models

    names = list_models(pattern)
    if all_:
        from prunectl import engine

        names += engine.library_models(pattern)
    Output(as_json).emit(names, lambda c: c.print("\n".join(names)))


@handle_errors
def datasets_(as_json: JsonOpt = False) -> None:
    """List the datasets, the training protocol each follows, and your own data's forms and options."""
    output = Output(as_json)
    doc = output.engine().datasets_report()

    def render(console: Console) -> None:
        table = Table(title="datasets")
        for col in ("name", "classes", "input", "protocol"):
            table.add_column(col)
        for r in doc["datasets"]:
            table.add_row(r["name"], str(r["num_classes"]), "x".join(str(v) for v in r["input_size"]), r["protocol"])
        console.print(table)
        own = Table(title="your own data: NAME?key=value&key=value")
        for col in ("name", "holds", "options"):
            own.add_column(col, overflow="fold")
        for r in doc["user_data"]:
            own.add_row(r["name"], r["holds"], "\n".join(f"{k}=  {v}" for k, v in r["options"].items()))
        console.print(own)
        console.print(doc["protocol_rule"])

    output.emit(doc, render)
