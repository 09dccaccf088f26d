"""`python -m prunectl` runs the CLI; under torchrun (`torchrun --nproc-per-node N -m prunectl train ...`) only
rank 0 prints to stdout (every rank runs the same command; errors still reach stderr)."""

import os
import sys

from prunectl.cli.app import main

if os.environ.get("RANK", "0") != "0":
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process
main()
