"""ThiNet (Luo et al. 2017): the selection rules on constructed contribution matrices, the kept counts, the
surgery, and better-than-random reconstruction on a random conv pair."""

from __future__ import annotations

import itertools
import json

import pytest
import torch
from tinymodels import randomised, tiny_dataset

from prunectl import paths
from prunectl.errors import BadValueError
from prunectl.methods import PruneContext, get_method
from prunectl.methods.layerwise import default_layers, kept_count
from prunectl.methods.sampling import Draw, sample
from prunectl.methods.thinet import (
    ThiNetSettings,
    choose,
    contributions,
    greedy_removal,
    relative_error,
    scales,
)
from prunectl.models import Arch, build_model, create_model, default_arch
from prunectl.structure import channel_groups, masked_model


def QUIET(message: str) -> None:  # notes are not under test here
    pass


def gram_of(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x = x.double()
    y = x.sum(1)
    return x.T @ x, x.T @ y, y @ y


def removal_error(x: torch.Tensor, removed: list[int]) -> float:
    return float(x[:, removed].sum(1).norm())


def test_a_dead_channel_is_removed_first_and_never_chosen_forward():
    x = torch.randn(200, 6, generator=torch.Generator().manual_seed(0))
    x[:, 3] = 0
    gram, rhs, _ = gram_of(x)
    assert greedy_removal(gram, 1) == [3]
    assert 3 not in choose(gram, rhs, 5, "forward", QUIET, "t")


def test_a_cancelling_pair_is_removed_at_zero_error():
    x = torch.randn(300, 6, generator=torch.Generator().manual_seed(0)) * 3
    x[:, 1] /= 3  # the pair is the weakest channel: the first removal takes it, the second its twin at zero cost
    x[:, 4] = -x[:, 1]  # a duplicated input channel whose next-layer weights are negated
    gram, rhs, yy = gram_of(x)
    removed = greedy_removal(gram, 2)
    assert sorted(removed) == [1, 4]
    kept = choose(gram, rhs, 4, "greedy", QUIET, "t")
    assert relative_error(gram, rhs, yy, kept, torch.ones(4, dtype=torch.float64)) < 1e-6


def test_the_least_squares_scale_never_increases_the_error():
    gen = torch.Generator().manual_seed(0)
    for trial in range(10):
        x = torch.randn(100, 8, generator=gen) * torch.rand(8, generator=gen)
        gram, rhs, yy = gram_of(x)
        kept = choose(gram, rhs, 4, "greedy", QUIET, "t")
        w = scales(gram, rhs, kept, QUIET, "t")
        assert relative_error(gram, rhs, yy, kept, w) <= relative_error(gram, rhs, yy, kept, torch.ones(4).double())
        assert not torch.allclose(w, torch.ones(4).double()), trial  # the scale is not trivially 1 here


def test_greedy_is_never_better_than_brute_force_and_optimal_on_the_dead_channel_construction():
    gen = torch.Generator().manual_seed(1)
    for dead in (False, True):
        x = torch.randn(80, 6, generator=gen)
        if dead:
            x[:, 2] = 0
            x[:, 5] = 0
        gram, _, _ = gram_of(x)
        greedy = removal_error(x, greedy_removal(gram, 2))
        best = min(removal_error(x, list(pair)) for pair in itertools.combinations(range(6), 2))
        assert greedy >= best - 1e-6
        if dead:
            assert greedy == pytest.approx(best, abs=1e-6) and best == pytest.approx(0, abs=1e-6)


def test_kept_counts_are_int_c_times_r():
    assert kept_count(16, 0.5) == 8 and kept_count(64, 0.3) == 19 and kept_count(10, 0.7) == 7
    with pytest.raises(BadValueError, match=r"\(0, 1\]"):
        ThiNetSettings(ratio=0)
    with pytest.raises(BadValueError, match=r"\(0, 1\]"):
        ThiNetSettings(ratio=1.5)


@pytest.mark.parametrize("ratio,entry", [(0.3, "thinet30"), (0.5, "thinet50"), (0.7, "thinet70")])
def test_resnet50_ratios_give_the_zoo_thinet_architectures(ratio, entry):
    with torch.device("meta"):  # the structure only: no weights allocated
        model = build_model(default_arch("resnet50", num_classes=1000))
    groups = {g.name: g for g in channel_groups(model)}
    layers = default_layers(model, "thinet")
    assert len(layers) == 32  # conv1 and conv2 of each of the 16 bottlenecks
    zoo = json.loads((paths.zoo_root() / "entries" / f"{entry}-resnet50-imagenet.json").read_text())
    mids = [b["mid"] for stage in zoo["arch"]["config"]["blocks"] for b in stage]
    widths = [kept_count(groups[n].channels, ratio) for n in layers]
    assert widths == [w for mid in mids for w in mid]


def test_vgg16_defaults_are_conv1_1_to_conv4_3_and_give_the_thinet_conv_widths():
    model = create_model("vgg16")
    groups = {g.name: g for g in channel_groups(model)}
    layers = default_layers(model, "thinet")
    assert [kept_count(groups[n].channels, 0.5) for n in layers] == [32, 32, 64, 64, 128, 128, 128, 256, 256, 256]


ARCH = Arch("cifar_vgg", {"cfg": [8, "M", 10, 6], "head": "linear"}, 5, (3, 8, 8))


def test_the_pruned_model_equals_the_masked_and_scaled_model():
    model = randomised(ARCH)
    out = get_method("thinet").prune(model, ThiNetSettings(ratio=0.5, layers=("features.0",)),
                                     PruneContext(data=tiny_dataset(ARCH)))
    kept = out.edit.keep["features.0"]
    assert len(kept) == 4
    original, pruned = model.features[4].weight, out.model.features[4].weight
    # every kept column is the original column times one scalar
    ratio = pruned / original[:, kept]
    assert torch.allclose(ratio, ratio[:1, :, :1, :1].expand_as(ratio), atol=1e-4)
    assert not torch.allclose(ratio, torch.ones_like(ratio))
    manual = masked_model(model, out.edit)
    with torch.no_grad():
        manual.features[4].weight[:, kept] = pruned
    x = torch.randn(5, 3, 8, 8)
    out.model.eval()
    with torch.no_grad():
        assert torch.allclose(out.model(x), manual(x), atol=1e-5)
    assert out.report["layers"][0]["rel_error"] <= out.report["layers"][0]["rel_error_unscaled"] + 1e-9


def held_out(model, data):
    """Train and held-out contribution matrices of features.0's channels to features.4's output."""
    weight = model.features[4].weight.detach()
    train = contributions(sample([(model, "features.4", True)], data, Draw(32, 16, 0))[0], weight, 0)
    test = contributions(sample([(model, "features.4", True)], data, Draw(32, 16, 1))[0], weight, 1)
    return gram_of(train), gram_of(test)


@pytest.mark.parametrize("selection", ["greedy", "forward"])
def test_thinet_beats_the_mean_of_20_random_subsets_on_held_out_samples(selection):
    model = randomised(ARCH, seed=2)
    with torch.no_grad():  # filters of varied strength (a trained net's are far from uniform)
        model.features[0].weight.mul_(torch.logspace(-1.5, 0.5, 8)[:, None, None, None])
    data = tiny_dataset(ARCH, count=64)
    (g, b, _), (gt, bt, yyt) = held_out(model, data)

    def error(kept):
        return relative_error(gt, bt, yyt, kept, scales(g, b, kept, QUIET, "t"))

    chosen = choose(g, b, 4, selection, QUIET, "t")
    gen = torch.Generator().manual_seed(0)
    randoms = [error(sorted(torch.randperm(8, generator=gen)[:4].tolist())) for _ in range(20)]
    assert error(chosen) < sum(randoms) / len(randoms)


def test_a_layer_without_a_conv_consumer_is_refused_in_one_line():
    model = randomised(ARCH)
    with pytest.raises(BadValueError, match="no plain-conv consumer") as err:
        get_method("thinet").prune(model, ThiNetSettings(layers=("features.7",)),
                                   PruneContext(data=tiny_dataset(ARCH)))
    assert "\n" not in str(err.value)


def test_a_short_fine_tune_between_layers_trains_the_partly_pruned_model():
    model, data = randomised(ARCH), tiny_dataset(ARCH, count=32)
    plain = get_method("thinet").prune(model, ThiNetSettings(), PruneContext(data=data))
    tuned = get_method("thinet").prune(model, ThiNetSettings(finetune_steps=2, finetune_lr=0.1),
                                       PruneContext(data=data))
    assert plain.reference is not None and tuned.reference is None  # fine-tuned weights have no masked twin
    assert plain.report["widths"] == tuned.report["widths"]
    assert not torch.allclose(plain.model.features[0].weight, tuned.model.features[0].weight)
    with pytest.raises(BadValueError, match="needs the training data"):
        get_method("thinet").prune(model, ThiNetSettings(), PruneContext())
