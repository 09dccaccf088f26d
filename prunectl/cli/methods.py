"""Command `methods`: the registered pruning methods, and one method's facts and settings."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from prunectl.cli.options import JsonOpt
from prunectl.cli.output import Output, handle_errors


def register(app: typer.Typer) -> None:
    app.command("methods")(methods_)


@handle_errors
def methods_(
    name: Annotated[str | None, typer.Argument(help="A method: show its facts and settings.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List the pruning methods, or show one method's facts and settings (for `prune --set KEY=VALUE`)."""
    Output(as_json).engine()
    from prunectl.engine.method_info import method_info, method_rows

    if name is None:
        rows = method_rows()
        Output(as_json).emit(rows, lambda c: _render_list(c, rows))
        return
    info = method_info(name)
    Output(as_json).emit(info, lambda c: _render_method(c, info))


def _yes(value: bool) -> str:
    return "yes" if value else "no"


def _render_list(console: Console, rows: list[dict[str, Any]]) -> None:
    table = Table(title="pruning methods (prunectl methods NAME: its settings)")
    for col in ("name", "structured", "needs data", "trains", "summary"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r["name"], _yes(r["structured"]), _yes(r["needs_data"]), _yes(r["trains"]), r["summary"])
    console.print(table)


def _render_method(console: Console, info: dict[str, Any]) -> None:
    console.print(f"[bold]{info['name']}[/bold]: {info['summary']}")
    console.print(f"citation: {info['citation']}")
    console.print(f"structured: {_yes(info['structured'])}    needs data: {_yes(info['needs_data'])}    "
                  f"acts during training: {_yes(info['trains'])}")
    ft = info["imagenet_finetune_epochs"]
    cap = "2 × epochs once the FLOPs ratio is ≥ 2, else int(epochs × ratio)" if info["imagenet_scratch_b_capped"] \
        else "int(epochs × FLOPs ratio)"
    console.print(f"ImageNet: fine-tune {ft if ft is not None else 'the protocol default'} epochs; scratch-B {cap}")
    tables = [("settings (prune --set KEY=VALUE)", info["settings"])]
    if info["training_settings"]:
        tables.append(("training settings", info["training_settings"]))
    for title, rows in tables:
        table = Table(title=title)
        for col in ("name", "type", "default", "help"):
            table.add_column(col, overflow="fold")
        for r in rows:
            default = "(required)" if r["required"] else json.dumps(r["default"])
            table.add_row(r["name"], r["type"], default, r["help"])
        console.print(table)
