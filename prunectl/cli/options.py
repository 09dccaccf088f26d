"""Options shared by several commands, defined once as `Annotated` aliases."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document instead of tables.")]
OutOpt = Annotated[Path | None, typer.Option("--out", "-o", help="Run directory to create (default: the run store, "
                                                                  "named by the spec's hash).")]
DeviceOpt = Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:N or auto (CUDA when present).")]
DataDirOpt = Annotated[Path | None, typer.Option("--data-dir", help="Where dataset files are (default: "
                                                                     "$PRUNECTL_DATA_DIR or ~/.cache/prunectl/data).")]
DownloadOpt = Annotated[bool, typer.Option("--download", help="Download a torchvision dataset if it is missing.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of initialisation, data order and augmentation.")]
DatasetOpt = Annotated[str, typer.Option("--dataset", "-d", help="Dataset name, imagefolder:PATH or npz:PATH.")]
