"""Regression-based channel pruning (He et al. 2017): LASSO selection plus least-squares refit on planted
redundancy, LS optimality, better than random, the penalty search band, and targets from the original model."""

from __future__ import annotations

import pytest
import torch
from tinymodels import randomised, tiny_dataset

from prunectl.errors import BadValueError
from prunectl.methods import PruneContext, get_method
from prunectl.methods import regression as cp
from prunectl.methods.lasso import lasso, select
from prunectl.methods.layerwise import least_squares
from prunectl.methods.regression import RegressionSettings, lasso_gram
from prunectl.methods.sampling import Draw, sample
from prunectl.models import Arch, create_model


def quiet(message: str) -> None:
    pass


def refit_error(patches: torch.Tensor, target: torch.Tensor, kept: list[int]) -> float:
    x = patches[:, kept, :].reshape(len(target), -1)
    w = least_squares(x, target, "t", quiet)
    return float((x @ w - target).norm() / target.norm())


def planted(n: int = 400) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """8 input channels of a 1x1 conv (6 outputs), channels 4-7 exact copies of 0-3 that the next layer reads along
    the same direction as their twin, at half or twice its strength.

    (With independent random next-layer weights for the copies, the LASSO on per-channel coefficients, whose
    columns are x_c W_c, often keeps both copies of one channel: a single coefficient cannot express
    x_c (W_c + W_c+4). The released code's objective has this property too; the OLS refit cannot undo it.)"""
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(n, 4, 1, generator=gen)
    patches = torch.cat([base, base], 1)
    first = torch.randn(6, 4, 1, 1, generator=gen)
    weight = torch.cat([first, first * torch.tensor([0.5, 2.0, 2.0, 0.5])[None, :, None, None]], 1)
    target = torch.einsum("sck,fck->sf", patches, weight.reshape(6, 8, 1))
    return patches, weight, target


def test_lasso_and_refit_rebuild_planted_duplicates_exactly_and_a_bad_subset_does_not():
    patches, weight, target = planted()
    gram, rhs, rows = lasso_gram(patches, weight, target, torch.arange(len(target)))
    kept = select(gram, rhs, rows, 4, 0.1, exact=True).kept
    assert kept == [0, 3, 5, 6]  # one copy of each channel: the one the next layer reads more strongly
    assert refit_error(patches, target, kept) < 1e-6
    assert refit_error(patches, target, [0, 4, 1, 5]) > 1e-2  # both copies of 0 and 1, neither of 2 or 3


def test_the_refit_is_never_worse_than_the_sliced_original_weights():
    arch = Arch("cifar_vgg", {"cfg": [8, "M", 10, 6], "head": "linear"}, 5, (3, 8, 8))
    out = get_method("regression").prune(randomised(arch), RegressionSettings(ratio=0.5),
                                         PruneContext(data=tiny_dataset(arch, count=64)))
    for layer in out.report["layers"]:
        assert layer["rel_error"] <= layer["rel_error_sliced"] + 1e-6
    assert out.report["widths"] == {"features.0": 4, "features.4": 5}


def test_regression_beats_the_mean_of_20_random_subsets_on_held_out_samples():
    arch = Arch("cifar_vgg", {"cfg": [8, "M", 10, 6], "head": "linear"}, 5, (3, 8, 8))
    model = randomised(arch, seed=2)
    with torch.no_grad():
        model.features[0].weight.mul_(torch.logspace(-1.5, 0.5, 8)[:, None, None, None])
    data = tiny_dataset(arch, count=64)
    weight = model.features[4].weight.detach()
    train = sample([(model, "features.4", True)], data, Draw(48, 16, 0))[0]
    test = sample([(model, "features.4", True)], data, Draw(64, 16, 1))[0]
    assert train.patches is not None and test.patches is not None

    def held_out(kept: list[int]) -> float:
        x = train.patches[:, kept, :].reshape(len(train.outputs), -1)
        w = least_squares(x, train.outputs, "t", quiet)
        xt = test.patches[:, kept, :].reshape(len(test.outputs), -1)
        return float((xt @ w - test.outputs).norm() / test.outputs.norm())

    gram, rhs, rows = lasso_gram(train.patches, weight, train.outputs, torch.arange(400))
    chosen = select(gram, rhs, rows, 4, 0.1, exact=True).kept
    gen = torch.Generator().manual_seed(0)
    randoms = [held_out(sorted(torch.randperm(8, generator=gen)[:4].tolist())) for _ in range(20)]
    assert held_out(chosen) < sum(randoms) / len(randoms)


@pytest.mark.parametrize("keep", [3, 5, 10, 12])
def test_the_support_lands_in_the_tolerance_band(keep):
    gen = torch.Generator().manual_seed(keep)
    z = torch.randn(500, 16, generator=gen) * torch.rand(16, generator=gen)
    y = z @ torch.randn(16, generator=gen) + 0.1 * torch.randn(500, generator=gen)
    gram, rhs = (z.T @ z).double(), (z.T @ y).double()
    support = select(gram, rhs, 500, keep, 0.1, exact=False)
    assert support.in_band and keep <= len(support.kept) <= keep + int(0.1 * keep)
    assert len(select(gram, rhs, 500, keep, 0.1, exact=True).kept) == keep


def test_a_channel_with_zero_next_layer_weights_gets_zero_coefficient_for_every_penalty():
    z = torch.randn(300, 6, generator=torch.Generator().manual_seed(0))
    z[:, 2] = 0
    y = z.sum(1)
    gram, rhs = (z.T @ z).double(), (z.T @ y).double()
    for alpha in (1e-6, 1e-3, 1e-1):
        assert lasso(gram, rhs, alpha, 300)[2] == 0


def test_targets_come_from_the_original_model_so_pruning_layer_1_leaves_layer_2s_target_alone(monkeypatch):
    arch = Arch("cifar_vgg", {"cfg": [8, "M", 10, 6], "head": "linear"}, 5, (3, 8, 8))
    model, data = randomised(arch), tiny_dataset(arch, count=32)
    seen: list[tuple[str, torch.Tensor, torch.Tensor]] = []
    real = cp.sample

    def recording(taps, *args, **kwargs):
        here, orig = real(taps, *args, **kwargs)
        seen.append((taps[0][1], here.outputs, orig.outputs))
        return here, orig

    monkeypatch.setattr(cp, "sample", recording)
    get_method("regression").prune(model, RegressionSettings(ratio=0.5), PruneContext(data=data))
    assert [name for name, _, _ in seen] == ["features.4", "features.7"]
    _, current, target = seen[1]
    direct = real([(model, "features.7", False)], data, Draw(32, 10, 0))[0]
    assert torch.equal(target, direct.outputs)  # the original model's output, unchanged by pruning layer 1
    assert not torch.allclose(current, target)  # while the inputs come from the partly pruned model


def test_the_vgg16_5x_preset_gives_the_zoo_widths_and_bad_settings_are_one_line_errors():
    widths = cp.target_widths(create_model("vgg16"), [], RegressionSettings(preset="vgg16-5x"))
    assert list(widths.values()) == [24, 22, 41, 51, 108, 89, 111, 184, 276, 228]
    for bad in ({}, {"ratio": 0}, {"ratio": 1.2}, {"preset": "vgg16-9x"}, {"preset": "vgg16-5x", "ratio": 0.5}):
        with pytest.raises(BadValueError) as err:
            RegressionSettings(**bad)
        assert "\n" not in str(err.value)
    with pytest.raises(BadValueError, match="unpruned VGG-16"):
        cp.target_widths(create_model("smallcnn"), [], RegressionSettings(preset="vgg16-5x"))


def test_a_singular_refit_is_regularised_and_said():
    notes: list[str] = []
    x = torch.randn(5, 3)
    x = torch.cat([x, x[:, :1]], 1)  # a repeated column
    solution = least_squares(x, torch.randn(5, 2), "layer", notes.append)
    assert torch.isfinite(solution).all() and "singular" in notes[0] and "\n" not in notes[0]
