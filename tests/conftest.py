"""Shared fixtures: every test gets its own run store and data directory under tmp_path, never the network."""

from __future__ import annotations

import pytest
import torch

# One intra-op thread for the whole suite: the models are tiny, and on two shared cores OpenMP barriers stall
# badly whenever another process competes (a small CIFAR forward: 6 s with two threads, 0.1 s with one).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _isolated_store(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNECTL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PRUNECTL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("PRUNECTL_DEBUG", raising=False)
