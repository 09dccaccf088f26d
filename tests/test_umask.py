"""Files prunectl writes get the user's umask (a shared store on a cluster stays readable by the group), not the
0600 of the temporary files they are written through."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch

from prunectl import engine
from prunectl.core.io import save_tensors, temp_dir_beside, write_json


@pytest.fixture
def umask():
    old = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize(("mask", "file_mode", "dir_mode"), [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750),
                                                             (0o002, 0o664, 0o775)])
def test_json_safetensors_and_temp_dirs_follow_the_umask(umask, tmp_path, mask, file_mode, dir_mode):
    umask(mask)
    write_json(tmp_path / "a.json", {"x": 1})
    save_tensors(tmp_path / "w.safetensors", {"w": torch.ones(2)})
    assert mode(tmp_path / "a.json") == file_mode
    assert mode(tmp_path / "w.safetensors") == file_mode
    assert mode(temp_dir_beside(tmp_path / "run")) == dir_mode


def test_every_file_of_a_trained_run_is_0644_under_umask_022(umask, tmp_path):
    run = engine.train(engine.baseline_spec("lenet5", "mnist5k", epochs=1), out=tmp_path / "run")
    files = [p for p in run.path.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"model.safetensors", "result.json", "spec.json"}
    assert {p.name: oct(mode(p)) for p in files} == {p.name: oct(0o644) for p in files}
    assert mode(run.path) == 0o755
