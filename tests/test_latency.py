"""Measured latency: `prunectl.core.latency.measure`, `info --latency`, the prune stage's before/after record and
`compare --latency`."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from prunectl import engine
from prunectl.cli.app import app
from prunectl.core.latency import LatencySettings, measure, parse_batch_sizes
from prunectl.errors import BadValueError

runner = CliRunner()


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    return engine.train(engine.baseline_spec("lenet5", "mnist5k", epochs=1), out=tmp_path_factory.mktemp("b") / "r")


def test_measure_times_every_batch_size_and_leaves_the_model_as_it_was():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 4))
    model.train()
    timed = measure(model, (3, 2, 2), LatencySettings(batch_sizes=(1, 8), warmup=1, repeats=3))
    assert [r["batch"] for r in timed["rows"]] == [1, 8]
    for row in timed["rows"]:
        assert 0 < row["min_ms"] <= row["median_ms"]
        assert row["per_image_ms"] == pytest.approx(row["median_ms"] / row["batch"], rel=1e-3)
    assert timed["device"] == "cpu" and timed["repeats"] == 3
    assert model.training and next(model.parameters()).device.type == "cpu"


def test_a_bigger_network_takes_longer():
    small = torch.nn.Conv2d(3, 4, 3)
    big = torch.nn.Sequential(*[torch.nn.Conv2d(3 if i == 0 else 64, 64, 3, padding=1) for i in range(6)])
    settings = LatencySettings(batch_sizes=(4,), warmup=1, repeats=5)
    assert measure(big, (3, 32, 32), settings)["rows"][0]["median_ms"] > \
        measure(small, (3, 32, 32), settings)["rows"][0]["median_ms"]


@pytest.mark.parametrize("text", ["1,x", "0", "", "-4,2"])
def test_bad_batch_sizes_are_one_line_errors(text):
    with pytest.raises(BadValueError):
        parse_batch_sizes(text)


def test_info_latency_prints_figures_next_to_flops_and_params():
    result = runner.invoke(app, ["info", "lenet5", "--latency", "--batch-sizes", "1,4"])
    assert result.exit_code == 0, result.output
    line = next(x for x in result.stdout.splitlines() if x.startswith("latency ("))
    assert "cpu" in line and "batch 1 " in line and "batch 4 " in line and " ms" in line
    doc = json.loads(runner.invoke(app, ["info", "lenet5", "--latency", "--batch-sizes", "2", "--json"]).stdout)
    assert [r["batch"] for r in doc["latency"]["rows"]] == [2] and doc["latency"]["rows"][0]["median_ms"] > 0
    assert "latency" not in json.loads(runner.invoke(app, ["info", "lenet5", "--json"]).stdout)
    bad = runner.invoke(app, ["info", "lenet5", "--latency", "--batch-sizes", "a"])
    assert bad.exit_code == 2 and "--batch-sizes" in bad.output


def test_the_prune_result_records_latency_before_and_after(baseline, tmp_path):
    result = runner.invoke(app, ["prune", str(baseline.path), "-M", "l1-norm", "--ratio", "0.5", "--json",
                                 "--out", str(tmp_path / "p")])
    assert result.exit_code == 0, result.output
    lat = json.loads(result.stdout)["latency"]
    assert lat["before"]["rows"][0]["batch"] == 1 and lat["after"]["rows"][0]["median_ms"] > 0
    assert lat["speedup"]["1"] == pytest.approx(lat["before"]["rows"][0]["median_ms"]
                                                / lat["after"]["rows"][0]["median_ms"], rel=1e-2)
    off = runner.invoke(app, ["prune", str(baseline.path), "-M", "l1-norm", "--ratio", "0.25", "--no-latency",
                              "--json", "--out", str(tmp_path / "q")])
    assert off.exit_code == 0, off.output
    assert json.loads(off.stdout)["latency"] is None


def test_compare_latency_adds_a_column(baseline):
    doc = json.loads(runner.invoke(app, ["compare", str(baseline.path), "--latency", "--json"]).stdout)
    assert doc["groups"][0]["latency_ms"] > 0
    plain = json.loads(runner.invoke(app, ["compare", str(baseline.path), "--json"]).stdout)
    assert plain["groups"][0]["latency_ms"] is None
    table = runner.invoke(app, ["compare", str(baseline.path), "--latency", "--markdown"])
    assert "latency ms (batch 1)" in table.stdout
