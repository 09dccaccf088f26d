"""Lottery tickets: nested masks, sparsity per round, exact rewinding, the random-init control, the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from prunectl import engine, paths
from prunectl.cli.app import app
from prunectl.engine.lottery import LotterySettings, lottery
from prunectl.errors import BadValueError

runner = CliRunner()


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    import os

    os.environ["PRUNECTL_HOME"] = str(tmp_path_factory.mktemp("home"))
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def mlp_baseline(home):
    spec = engine.baseline_spec("lenet300100", "mnist5k", epochs=2, seed=1)
    return engine.train(spec.replace(save_init=True, snapshot_epochs=(1,)), out=home / "mlp")


@pytest.fixture(scope="module")
def mlp_rounds(mlp_baseline):
    return lottery(mlp_baseline, LotterySettings(rate=0.2, rounds=3, include_linear=True))


def _density(mask: dict[str, torch.Tensor]) -> float:
    return sum(float(m.sum()) for m in mask.values()) / sum(m.numel() for m in mask.values())


def test_masks_are_nested_and_sparsity_follows_the_rate(mlp_rounds):
    masks = [r.pruned.mask() for r in mlp_rounds.rounds]
    for k, mask in enumerate(masks, start=1):
        total = sum(m.numel() for m in mask.values())
        assert abs(_density(mask) - (1 - 0.2) ** k) <= k / total + 1e-9
    for earlier, later in zip(masks, masks[1:], strict=False):
        assert all(torch.all(later[n] <= earlier[n]) for n in earlier)  # nothing revives


def test_ticket_starts_from_mask_times_init_and_random_init_only_shares_the_mask(mlp_baseline, mlp_rounds):
    init = mlp_baseline.weights(paths.INIT)
    for r in mlp_rounds.rounds:
        mask = r.pruned.mask()
        start = r.ticket.weights(paths.INIT)  # the ticket saves the weights it started retraining from
        for name in init:
            expected = init[name] * mask[name] if name in mask else init[name]
            assert torch.equal(start[name], expected), name
        assert all(torch.equal(r.random.mask()[n], mask[n]) for n in mask)
        assert r.random.spec().seed != r.ticket.spec().seed and r.random.spec().density_scaled_init
        for run in (r.ticket, r.random):
            final = run.weights()
            assert all(torch.all(final[n][mask[n] == 0] == 0) for n in mask)  # pruned weights stayed zero
        assert r.ticket.result()["arm"] == "winning-ticket" and r.random.result()["arm"] == "random-init"
        assert r.ticket.result()["level"]["round"] == r.round


def test_random_init_is_fresh_and_scaled_for_density(mlp_baseline, mlp_rounds):
    r = mlp_rounds.rounds[-1]
    spec = r.random.spec()
    torch.manual_seed(spec.seed)
    from prunectl.models import build_model

    fresh = build_model(spec.arch).state_dict()
    mask = r.pruned.mask()
    name = "classifier.fc1.weight"
    scale = (mask[name].numel() / mask[name].sum()).sqrt()
    from prunectl.training.trainer import Trainer  # noqa: F401  (the trainer applies the mask at its start)

    expected = fresh[name] * scale * mask[name]
    ticket_init = r.ticket.weights(paths.INIT)[name]
    assert not torch.equal(expected, ticket_init)
    assert expected[mask[name] == 1].std() > fresh[name].std()  # scaled up for the surviving density


def test_late_rewinding_restores_the_epoch_k_weights(mlp_baseline):
    runs = lottery(mlp_baseline, LotterySettings(rate=0.5, rounds=1, include_linear=True, rewind="epoch:1"))
    epoch1 = mlp_baseline.weights(paths.rewind_weights(1))
    mask = runs.rounds[0].pruned.mask()
    start = runs.rounds[0].ticket.weights(paths.INIT)
    assert all(torch.equal(start[n], epoch1[n] * mask[n] if n in mask else epoch1[n]) for n in epoch1)
    assert not torch.equal(epoch1["classifier.fc1.weight"], mlp_baseline.weights(paths.INIT)["classifier.fc1.weight"])


def test_structured_variant_zeroes_whole_filters(home):
    base = engine.train(engine.baseline_spec("lenet5", "mnist5k", epochs=1).replace(save_init=True),
                        out=home / "lenet5")
    runs = lottery(base, LotterySettings(rate=0.5, rounds=1, structure="filter"))
    mask = runs.rounds[0].pruned.mask()
    for name, m in mask.items():
        per_filter = m.flatten(1)
        assert torch.all((per_filter.sum(1) == 0) | (per_filter.sum(1) == per_filter.shape[1])), name
        assert 0 < int(per_filter.any(1).sum()) < m.shape[0]
    final = runs.rounds[0].ticket.weights()
    assert all(torch.all(final[n][mask[n] == 0] == 0) for n in mask)


def test_cli_lottery_end_to_end_with_compare_json(mlp_baseline):
    result = runner.invoke(app, ["lottery", str(mlp_baseline.path), "--rate", "0.2", "--rounds", "3",
                                 "--include-linear", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    tickets = [g for g in doc["groups"] if g["arm"] == "winning-ticket"]
    assert [g["level"]["round"] for g in tickets] == [1, 2, 3]
    assert [g["level"]["remaining"] for g in tickets] == pytest.approx([0.8, 0.64, 0.512], abs=1e-3)
    assert all(g["diff"]["vs"] == "random-init" for g in tickets)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--rate", "1.5"], "rate must be in (0, 1)"),
        (["--rate", "0"], "rate must be in (0, 1)"),
        (["--rounds", "0"], "rounds must be >= 1"),
        (["--structure", "channel"], "structure must be weight or filter"),
    ],
)
def test_bad_lottery_settings_exit_2(mlp_baseline, args, needle):
    result = runner.invoke(app, ["lottery", str(mlp_baseline.path), *args])
    assert result.exit_code == 2 and needle in result.stderr


def test_baseline_without_init_and_model_without_convs_are_refused(home, mlp_baseline):
    plain = engine.train(engine.baseline_spec("lenet300100", "mnist5k", epochs=1), out=home / "plain")
    result = runner.invoke(app, ["lottery", str(plain.path)])
    assert result.exit_code == 2 and "--save-init" in result.stderr
    result = runner.invoke(app, ["lottery", str(mlp_baseline.path), "--structure", "filter"])
    assert result.exit_code == 2 and "no conv layers" in result.stderr
    with pytest.raises(BadValueError, match="epoch 2"):
        lottery(mlp_baseline, LotterySettings(rewind="epoch:2"))
