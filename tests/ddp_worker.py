"""One rank of a DDP test job: `torchrun ... tests/ddp_worker.py DIGEST_DIR [--rank-out] prunectl-args...`.

It runs the prunectl CLI as `python -m prunectl` does, and after training writes the sha256 of the rank's final
parameters and buffers to DIGEST_DIR/rank<R>.txt (outside the run directory). With --rank-out, ranks other
than 0 get `--out` + ".rank<R>" instead, so the test sees whether they create or write anything there.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

from prunectl.training.trainer import Trainer

rank = int(os.environ["RANK"])
digests = Path(sys.argv[1])
args = sys.argv[2:]
if args and args[0] == "--rank-out":
    args = args[1:]
    if rank:
        at = args.index("--out") + 1
        args[at] = f"{args[at]}.rank{rank}"
plain_fit = Trainer.fit


def fit_and_digest(self: Trainer) -> dict:
    summary = plain_fit(self)
    digest = hashlib.sha256()
    for name, tensor in sorted(self.model.state_dict().items()):
        digest.update(name.encode() + tensor.detach().cpu().contiguous().numpy().tobytes())
    (digests / f"rank{rank}.txt").write_text(digest.hexdigest())
    return summary


Trainer.fit = fit_and_digest  # type: ignore[method-assign]
if rank and "--rank-out" in sys.argv[2:3]:
    # this rank's --out stays empty by design, so it stops where the CLI would read the result rank 0 wrote
    import prunectl.engine as engine

    plain_train = engine.train

    def train_then_stop(*a, **kw):
        plain_train(*a, **kw)
        sys.exit(0)

    engine.train = train_then_stop  # type: ignore[assignment]
sys.argv = ["prunectl", *args]
if rank:
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115
from prunectl.cli.app import main  # noqa: E402

main()
