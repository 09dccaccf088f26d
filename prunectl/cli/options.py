"""Options shared by several commands, defined once as `Annotated` aliases."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from prunectl.errors import BadValueError

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document instead of tables.")]
OutOpt = Annotated[Path | None, typer.Option("--out", "-o", help="Run directory to create (default: the run store, "
                                                                  "named by the spec's hash).")]
DeviceOpt = Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:N or auto (CUDA when present).")]
DataDirOpt = Annotated[Path | None, typer.Option("--data-dir", help="Where dataset files are (default: "
                                                                     "$PRUNECTL_DATA_DIR or ~/.cache/prunectl/data).")]
DownloadOpt = Annotated[bool, typer.Option("--download", help="Download a torchvision dataset if it is missing.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of initialisation, data order and augmentation.")]
DatasetOpt = Annotated[str, typer.Option("--dataset", "-d", help="Dataset name, imagefolder:PATH or npz:PATH.")]
ThreadsOpt = Annotated[str | None, typer.Option(
    "--threads", metavar="N", help="CPU threads for torch (default: $PRUNECTL_THREADS, else $OMP_NUM_THREADS, else the "
                                   "cores shared among the prunectl processes running; N runs on one machine: "
                                   "cores/N each).")]
PrecisionOpt = Annotated[str, typer.Option(
    "--precision", help="fp32, or bf16 autocast (fast on GPUs; parameters stay fp32). Part of the run's spec.")]
CompileOpt = Annotated[bool, typer.Option(
    "--compile", help="torch.compile the model (first steps pay for compilation). Part of the run's spec.")]
SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", metavar="KEY=VALUE", help="A method setting (repeatable); VALUE is JSON (0.5, true, [1,2], \"A\"), "
                                       "else taken as a string.")]


def parse_assignments(items: list[str] | None, option: str = "--set") -> dict[str, Any]:
    """`["ratio=0.5", "variant=A", "skip=[16,20]"]` → {"ratio": 0.5, "variant": "A", "skip": [16, 20]}.

    A value is read as JSON when it parses, else kept as the string typed (so `variant=A` needs no quotes).

    >>> parse_assignments(["ratio=0.5", "variant=A", "skip=[16, 20]"])
    {'ratio': 0.5, 'variant': 'A', 'skip': [16, 20]}
    """
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise BadValueError(f"{option} takes KEY=VALUE, got '{item}'")
        if key in out:
            raise BadValueError(f"{option} sets '{key}' twice")
        try:
            out[key] = json.loads(text)
        except json.JSONDecodeError:
            out[key] = text
    return out
