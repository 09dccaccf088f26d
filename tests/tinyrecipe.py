"""A recipe TOML small enough to run end to end in seconds (smallcnn on mnist5k), and the environment for
running prunectl in a subprocess with this checkout's code."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def write_recipe(path: Path, *, seeds: tuple[int, ...] = (0, 1), epochs: int = 2,
                 arms: tuple[str, ...] = ("fine-tuned", "scratch-E")) -> Path:
    path.write_text(f"""name = "{path.stem}"
dataset = "mnist5k"
model = "smallcnn"
seeds = [{", ".join(map(str, seeds))}]
arms = [{", ".join(f'"{a}"' for a in arms)}]
[baseline]
epochs = {epochs}
[prune]
method = "l1-norm"
ratio = 0.5
[finetune]
epochs = 1
lr = 0.01
""")
    return path


def env() -> dict[str, str]:
    """os.environ (the test's run store and data dir) with this checkout first on PYTHONPATH, one thread."""
    out = dict(os.environ, OMP_NUM_THREADS="1")
    out["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    return out


def prunectl(*args: str, **kw) -> subprocess.Popen:
    """Start `python -m prunectl ARGS` (stdout and stderr captured, as text)."""
    return subprocess.Popen([sys.executable, "-m", "prunectl", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env(), **kw)
