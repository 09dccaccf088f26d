"""The `zoo` command group: list the papers' architectures and trained models shipped with prunectl."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from prunectl.cli.options import JsonOpt
from prunectl.cli.output import FLOPS_LABEL, Output, handle_errors
from prunectl.core.units import si_count

zoo_app = typer.Typer(name="zoo", no_args_is_help=True,
                      help="The papers' pruned architectures (and trained weights): use them as zoo:NAME.")


def register(app: typer.Typer) -> None:
    """Add the `zoo` group (`zoo list`) to the prunectl application."""
    app.add_typer(zoo_app, name="zoo")


@zoo_app.command("list")
@handle_errors
def list_(as_json: JsonOpt = False) -> None:
    """Every zoo entry: dataset, method, params, FLOPs (multiply-adds), paper and measured accuracy, weights."""
    from prunectl.engine.zoo import list_entries

    entries = [entry.summary() for entry in list_entries()]
    Output(as_json).emit(entries, lambda c: _render(c, entries))


def _render(console: Console, entries: list[dict[str, Any]]) -> None:
    """One table per dataset (the dataset is its title), narrow enough for an 80-column terminal."""
    for dataset in dict.fromkeys(e["dataset"] for e in entries):
        rows = [e for e in entries if e["dataset"] == dataset]
        table = Table(title=f"{dataset} ({rows[0]['num_classes']} classes, input {tuple(rows[0]['input_size'])})",
                      box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0), pad_edge=False, show_edge=False)
        for col in ("name", "method", "params", "FLOPs", "paper", "measured", "weights"):
            table.add_column(col, no_wrap=True,
                             justify="right" if col in ("params", "FLOPs", "paper", "measured") else "left")
        for e in rows:
            measured = e["measured"] or {}
            table.add_row(e["name"], e["method"], si_count(e["params"], ".3g"), si_count(e["flops"], ".3g"), _paper(e["paper_accuracy"]),
                          f"{measured['final_acc']:.2f}" if "final_acc" in measured else "—",
                          "yes" if e["weights"] else "no")
        console.print(table)
    console.print(f"FLOPs: {FLOPS_LABEL}. paper: top-1 % of the best arm in the cited table (--json gives every "
                  "arm and the citation). measured: our run's last-epoch test accuracy. Use an entry as zoo:NAME "
                  "with info, scratch or pull.")


def _paper(accuracy: Mapping[str, Any] | None) -> str:
    if not accuracy or not accuracy.get("top1"):
        return "—"
    return f"{max(accuracy['top1'].values()):.2f}"
