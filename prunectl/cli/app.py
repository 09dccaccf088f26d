"""The `prunectl` Typer application: global options, and the registration of every command module."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from prunectl import __version__
from prunectl.cli import basics, compare, hub, methods, pipeline, recipes, run, zoo
from prunectl.cli.output import set_debug

app = typer.Typer(
    name="prunectl",
    help="Prune networks, train pruned architectures from scratch, and compare — after Liu et al., ICLR 2019.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish, PowerShell
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


for module in (basics, methods, recipes, pipeline, compare, hub, zoo, run):
    module.register(app)


def readable_help(command: Any) -> Any:
    """Metavars people read in --help: `--epochs INTEGER`, `prune RUN`, a flag with none — instead of Typer's
    `<int>`, `<bool>` and `{run}` (applied to every command and group, in place; returns `command`)."""
    for param in command.params:
        kind = getattr(param, "param_type_name", "")  # Typer ships its own copy of click: duck-typed here
        if kind == "argument":
            name = (param.name or "value").upper()
            param.metavar = name + ("..." if param.nargs == -1 else "")
            param.display_type_rich = _no_type  # the name already says it; no `<str>` column
            usage = name if param.required else f"[{name}]"  # click's usage form, not Typer's `{run}`
            param._usage_display_name = lambda usage=usage, many=param.nargs != 1: usage + ("..." if many else "")
        elif kind == "option" and param.metavar is None:
            flag = getattr(param, "is_flag", False) or getattr(param, "count", False)
            param.metavar = "" if flag else _type_name(param)
    original = command.get_help_option

    def help_option(ctx: Any, original: Any = original) -> Any:
        option = original(ctx)
        if option is not None:
            option.metavar = ""
        return option

    command.get_help_option = help_option
    for sub in getattr(command, "commands", {}).values():
        readable_help(sub)
    return command


def _no_type(ctx: Any) -> None:
    return None


def _type_name(param: Any) -> str:
    """`int` → INTEGER, `float` → NUMBER, a path → PATH, else TEXT (a list option is repeated: the item's)."""
    bare = str(param.bare_type()) if hasattr(param, "bare_type") else "str"
    bare = bare.removeprefix("list[").removesuffix("]").lower()
    return {"int": "INTEGER", "float": "NUMBER", "path": "PATH"}.get(bare, "TEXT")


def command() -> Any:
    """The click command `prunectl` runs: the Typer app with readable help."""
    return readable_help(typer.main.get_command(app))


def main() -> None:
    command()(prog_name="prunectl")
