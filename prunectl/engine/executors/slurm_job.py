"""What a Slurm job of the slurm executor runs (imported only where submitit is installed).

submitit pickles the submitted callable: here that is only an argv and a log path, never a model or tensor.
"""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path

from submitit.helpers import Checkpointable


class RunCommand(Checkpointable):
    """`prunectl run RUN_DIR ...` in a Slurm job, its output appended to the run's run.log.

    Checkpointable: on pre-emption or time-out submitit requeues the same command (up to the executor's
    max_num_timeout for time-outs), which resumes the run from its last epoch checkpoint.
    """

    def __init__(self, argv: list[str], log: str) -> None:
        self.argv, self.log = list(argv), log

    def __call__(self) -> str:
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        with Path(self.log).open("ab") as log:
            log.write(f"== {stamp} slurm: {' '.join(self.argv)}\n".encode())
            log.flush()
            code = subprocess.run(self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  check=False).returncode
        if code != 0:
            raise RuntimeError(f"prunectl run exited {code}; log {self.log}")
        return self.log
