"""The activation sampler of the reconstruction methods: seeded, consistent with the consumer conv, bounded, and
refusing impossible draws in one line."""

from __future__ import annotations

import pytest
import torch
from tinymodels import randomised, tiny_dataset

from prunectl.errors import BadValueError
from prunectl.methods.sampling import Draw, default_draw, sample
from prunectl.models import Arch

ARCH = Arch("cifar_vgg", {"cfg": [6, "M", 8, 10], "head": "linear"}, 5, (3, 8, 8))
CONSUMER = "features.4"  # reads features.0 (after BN, ReLU, pool)


def test_sampling_is_reproducible_from_the_seed_and_differs_across_seeds():
    model, data = randomised(ARCH), tiny_dataset(ARCH, count=24)
    a = sample([(model, CONSUMER, True)], data, Draw(12, 5, seed=3))[0]
    b = sample([(model, CONSUMER, True)], data, Draw(12, 5, seed=3))[0]
    c = sample([(model, CONSUMER, True)], data, Draw(12, 5, seed=4))[0]
    assert a.patches is not None and b.patches is not None and c.patches is not None
    assert torch.equal(a.patches, b.patches) and torch.equal(a.outputs, b.outputs)
    assert not torch.equal(a.outputs, c.outputs)
    assert a.patches.shape == (12 * 5, 6, 9) and a.outputs.shape == (12 * 5, 8)  # images x positions samples


def test_patches_times_the_kernel_are_the_sampled_outputs_and_taps_share_positions():
    model, data = randomised(ARCH), tiny_dataset(ARCH)
    other = randomised(ARCH, seed=1)
    here, there = sample([(model, CONSUMER, True), (other, CONSUMER, True)], data, Draw(8, 4, seed=0))
    weight = model.get_submodule(CONSUMER).weight.reshape(8, 6, 9)
    assert here.patches is not None and there.patches is not None
    assert torch.allclose(torch.einsum("sck,fck->sf", here.patches, weight), here.outputs, atol=1e-5)
    # same images and positions in both models: the first layer's input patches (raw pixels) would agree
    first = [(m, "features.0", True) for m in (model, other)]
    p, q = sample(first, data, Draw(8, 4, seed=0))
    assert p.patches is not None and q.patches is not None and torch.equal(p.patches, q.patches)
    assert model.training is False  # randomised() gives eval mode, and sampling restores the mode


def test_impossible_draws_are_one_line_errors_and_defaults_are_capped():
    model, data = randomised(ARCH), tiny_dataset(ARCH, count=16)
    with pytest.raises(BadValueError, match="more than the 16 images") as err:
        default_draw(data, 17, None, 0)
    assert "\n" not in str(err.value)
    with pytest.raises(BadValueError, match="positions of the output map"):
        sample([(model, CONSUMER, True)], data, Draw(4, 17, 0), explicit_positions=True)  # 4x4 map
    notes: list[str] = []
    capped = sample([(model, CONSUMER, True)], data, Draw(4, 17, 0), note=notes.append)[0]
    assert len(capped.outputs) == 4 * 16 and "capped" in notes[0]
    assert default_draw(data, None, None, 0).images == 16  # the default (500) is capped to the split
    with pytest.raises(BadValueError, match="not a plain conv"):
        sample([(model, "classifier", True)], data, Draw(4, 1, 0))
