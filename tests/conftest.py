"""Shared fixtures: every test gets its own run store and data directory under tmp_path, never the network."""

from __future__ import annotations

import pytest
import torch

# Tiny models: a second intra-op thread buys nothing and stalls badly when the other core is busy.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _isolated_store(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNECTL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PRUNECTL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("PRUNECTL_DEBUG", raising=False)
