"""The `prunectl` Typer application: global options, and the registration of every command module."""

from __future__ import annotations

from typing import Annotated

import typer

from prunectl import __version__
from prunectl.cli import basics, compare, hub, methods, pipeline, run, zoo
from prunectl.cli.output import set_debug

app = typer.Typer(
    name="prunectl",
    help="Prune networks, train pruned architectures from scratch, and compare — after Liu et al., ICLR 2019.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"prunectl {__version__}")
        raise typer.Exit()


@app.callback()
def _global(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks (also PRUNECTL_DEBUG=1).")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    set_debug(debug)


for module in (basics, methods, pipeline, compare, hub, zoo, run):
    module.register(app)


def main() -> None:
    app()
