"""The `push` and `pull` commands: thin wrappers over prunectl.engine.hub."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from prunectl import paths
from prunectl.cli.options import JsonOpt
from prunectl.cli.output import Output, handle_errors

RepoArg = Annotated[str, typer.Argument(help="Target repo as hf:OWNER/REPO (created if missing).")]
RefArg = Annotated[str, typer.Argument(help="hf:OWNER/REPO, or hf:OWNER/REPO@REVISION for a branch, tag or commit; "
                                              "or zoo:NAME for a zoo entry with weights (see `prunectl zoo list`).")]
PullOutOpt = Annotated[Path | None, typer.Option("--out", "-o", help="Run directory to create (default: the run "
                                                                     "store, named by a hash of repo and commit).")]


def push(
    run: Annotated[str, typer.Argument(help="Finished run directory (or zoo:NAME with weights) to upload.")],
    repo: RepoArg,
    revision: Annotated[str | None, typer.Option(help="Branch to commit to (created from main if missing).")] = None,
    private: Annotated[bool, typer.Option("--private", help="Create the repo as private (if it is new).")] = False,
    commit_message: Annotated[str | None, typer.Option(help="Commit message (default names the run).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Upload a finished run to the Hugging Face Hub in one commit, with a generated model card."""
    from prunectl.engine import hub

    output = Output(as_json)
    from prunectl.engine.info import resolve_run

    info = hub.push(resolve_run(run), repo, revision=revision, private=private, commit_message=commit_message)
    output.emit(info, lambda c: _render_push(c, info))


def _render_push(console: Console, info: dict[str, Any]) -> None:
    console.print(f"pushed {len(info['files'])} files to {info['repo_id']}@{info['revision']}", soft_wrap=True)
    console.print(f"commit: {info['commit']}", soft_wrap=True)
    console.print(f"url: {info['url']}", soft_wrap=True)


def pull(ref: RefArg, out: PullOutOpt = None, as_json: JsonOpt = False) -> None:
    """Download a prunectl model from the Hub (or a zoo entry's weights) as a run directory (reused if pulled)."""
    from prunectl.core.io import read_json
    from prunectl.engine import hub, zoo

    output = Output(as_json)
    run = zoo.pull_entry(ref, out=out) if zoo.is_zoo_ref(ref) else hub.pull(ref, out=out)
    source = read_json(run.file(paths.SOURCE))
    report = {**source, "run": str(run.path), "id": run.id, "stage": run.stage}
    output.emit(report, lambda c: _render_pull(c, report))


def _render_pull(console: Console, report: dict[str, Any]) -> None:
    if report.get("revision") == "packaged":
        console.print(f"pulled {report['repo_id']} (packaged weights)", soft_wrap=True)
    else:
        console.print(f"pulled {report['repo_id']}@{report['revision']} (commit {report['commit']})",
                      soft_wrap=True)
    console.print(f"run: {report['run']}", soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add `push` and `pull` to the prunectl application."""
    app.command("push")(handle_errors(push))
    app.command("pull")(handle_errors(pull))
