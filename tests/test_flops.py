"""FLOPs and params: fvcore's counts equal an independent analytic count (conv + linear multiply-adds)."""

from __future__ import annotations

import pytest
import torch

from prunectl.core.flops import count
from prunectl.models import create_model


def _conv(cin: int, cout: int, k: int, out_hw: int) -> tuple[int, int]:
    """(params, multiply-adds) of a bias-free k×k conv producing an out_hw × out_hw map."""
    params = k * k * cin * cout
    return params, params * out_hw * out_hw


def analytic_vgg16(num_classes: int = 10) -> tuple[int, int]:
    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
    params = flops = 0
    cin, hw = 3, 32
    for v in cfg:
        if v == "M":
            hw //= 2
            continue
        p, f = _conv(cin, v, 3, hw)
        params += p + 2 * v  # conv + BN scale and shift
        flops += f
        cin = v
    params += cin * num_classes + num_classes
    flops += cin * num_classes
    return params, flops


def analytic_resnet56(num_classes: int = 10) -> tuple[int, int]:
    p, f = _conv(3, 16, 3, 32)
    params, flops = p + 2 * 16, f
    cin, hw = 16, 32
    for width, stride in ((16, 1), (32, 2), (64, 2)):
        for block in range(9):
            hw_out = hw // (stride if block == 0 else 1)
            for a, b in ((cin, width), (width, width)):
                p, f = _conv(a, b, 3, hw_out)
                params, flops = params + p + 2 * b, flops + f
            cin, hw = width, hw_out  # option-A shortcut: no parameters, no multiply-adds
    return params + 64 * num_classes + num_classes, flops + 64 * num_classes


def analytic_preresnet164(num_classes: int = 10) -> tuple[int, int]:
    p, f = _conv(3, 16, 3, 32)
    params, flops = p, f
    cin, hw = 16, 32
    for planes, stride in ((16, 1), (32, 2), (64, 2)):
        for block in range(18):
            s = stride if block == 0 else 1
            hw_out = hw // s
            params += 2 * cin + 2 * planes + 2 * planes  # bn1 (on the block input), bn2, bn3
            for a, b, k, at in ((cin, planes, 1, hw), (planes, planes, 3, hw_out), (planes, 4 * planes, 1, hw_out)):
                p, f = _conv(a, b, k, at)
                params, flops = params + p, flops + f
            if block == 0:  # 1×1 projection shortcut
                p, f = _conv(cin, 4 * planes, 1, hw_out)
                params, flops = params + p, flops + f
            cin, hw = 4 * planes, hw_out
    params += 2 * 256 + 256 * num_classes + num_classes  # final BN, classifier
    return params, flops + 256 * num_classes


@pytest.mark.parametrize("name, analytic", [("vgg16", analytic_vgg16), ("resnet56", analytic_resnet56),
                                            ("preresnet164", analytic_preresnet164)])
def test_fvcore_counts_equal_the_analytic_count(name, analytic):
    model = create_model(name, num_classes=10, input_size=(3, 32, 32))
    counts = count(model, (3, 32, 32))
    params, flops = analytic()
    assert counts.params == params == sum(p.numel() for p in model.parameters())
    assert counts.flops == flops
    assert counts.dense_flops == flops


def test_known_published_magnitudes():
    # Li et al. 2017 Table 1: VGG-16 on CIFAR-10 3.13e8 FLOPs; ResNet-56 1.25e8 (both multiply-adds).
    assert count(create_model("vgg16", head="l1"), (3, 32, 32)).flops == pytest.approx(3.13e8, rel=0.01)
    assert count(create_model("resnet56"), (3, 32, 32)).flops == pytest.approx(1.25e8, rel=0.01)


def test_masks_scale_each_layer_by_its_density():
    model = create_model("lenet300100")
    dense = count(model, (1, 28, 28))
    masks = {"classifier.fc1.weight": (torch.arange(784 * 300).reshape(300, 784) % 4 == 0).float()}
    sparse = count(model, (1, 28, 28), masks)
    fc1 = 784 * 300
    assert sparse.flops == dense.flops - fc1 + fc1 // 4
    assert sparse.params == dense.params - fc1 + fc1 // 4
    assert sparse.dense_params == dense.params
    row = next(r for r in sparse.layers if r.name == "classifier.fc1")
    assert row.density == pytest.approx(0.25)
