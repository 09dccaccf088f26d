"""Model families: every registered model builds, runs, round-trips through its Arch, and matches the papers."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torchvision
from torch import nn

from prunectl.errors import BadValueError, UnknownNameError
from prunectl.models import Arch, build_model, create_model, default_arch, list_models
from prunectl.models.cifar_vgg import VGG_CFGS
from prunectl.models.layers import ChannelSelection

VGG16_A = [32, 64, "M", 128, 128, "M", 256, 256, 256, "M", 256, 256, 256, "M", 256, 256, 256]
BIG = ("imagenet_vgg",)  # families whose default build is too slow to do twice per test (100M+ weights)



def shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_names_cover_the_papers() -> None:
    expected = {"vgg11", "vgg13", "vgg16", "vgg19", "resnet8", "resnet20", "resnet32", "resnet56", "resnet110",
                "preresnet110", "preresnet164", "densenet40", "smallcnn", "lenet5", "lenet300100",
                "resnet18", "resnet34", "resnet50", "vgg11_bn", "vgg16_bn", "vgg16_imagenet"}
    assert set(list_models()) == expected
    assert list_models("preresnet*") == ["preresnet110", "preresnet164"]


@pytest.mark.parametrize("name", list_models())
def test_builds_runs_and_round_trips(name: str) -> None:
    torch.manual_seed(0)
    arch = default_arch(name, num_classes=7)
    assert arch.name == name
    model = build_model(arch).eval()
    size = arch.input_size if arch.input_size[1] <= 32 else (3, 64, 64)  # ImageNet nets accept 64x64 too
    with torch.no_grad():
        assert model(torch.randn(2, *size)).shape == (2, 7)
    again = model.to_arch()
    assert again.same_structure(arch)
    if arch.family in BIG:
        with torch.device("meta"):
            rebuilt = build_model(again)
    else:
        rebuilt = build_model(again)
    assert rebuilt.to_arch().same_structure(again)
    assert shapes(rebuilt) == shapes(model)
    assert Arch.from_json(again.to_json()).same_structure(again)
    assert Arch.from_json(again.to_json()) == again


@pytest.mark.parametrize("name", ["vgg16", "smallcnn", "resnet8", "resnet20", "densenet40", "lenet5", "lenet300100"])
def test_cifar_and_mnist_sizes(name: str) -> None:
    for size in [(1, 28, 28), (3, 32, 32)]:
        model = create_model(name, num_classes=3, input_size=size).eval()
        with torch.no_grad():
            assert model(torch.randn(2, *size)).shape == (2, 3)


def test_too_small_input_is_refused() -> None:
    with pytest.raises(BadValueError, match="too small"):
        create_model("vgg16", input_size=(3, 8, 8))


def test_unknown_model_name_suggests_the_closest() -> None:
    with pytest.raises(UnknownNameError, match="preresnet164"):
        create_model("preresnet165")


def test_bad_configs_are_refused() -> None:
    with pytest.raises(BadValueError, match="6n\\+2"):
        build_model(Arch("cifar_resnet", {"depth": 57}, 10, (3, 32, 32)))
    mids = [[16] * 9, [32] * 9, [64] * 8]
    with pytest.raises(BadValueError, match="mid_widths"):
        build_model(Arch("cifar_resnet", {"depth": 56, "mid_widths": mids}, 10, (3, 32, 32)))
    with pytest.raises(BadValueError, match="positive integer"):
        build_model(Arch("cifar_vgg", {"cfg": [64, 0, "M"], "head": "linear"}, 10, (3, 32, 32)))
    arch = default_arch("preresnet164")
    config = copy.deepcopy(dict(arch.config))
    config["select"] = [None] * 55
    config["select"][3] = [0, 1]  # cfg says the block takes 64 channels
    with pytest.raises(BadValueError, match="selects 2 channels"):
        build_model(Arch("preresnet", config, 10, (3, 32, 32)))


# ---- analytic parameter counts -------------------------------------------------------------------------------


def conv_bn(cin: int, cout: int, k: int = 3) -> int:
    return k * k * cin * cout + 2 * cout


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_param_count_vgg16() -> None:
    total, cin = 0, 3
    for v in VGG_CFGS["vgg16"]:
        if v != "M":
            total, cin = total + conv_bn(cin, v), v
    total += 512 * 10 + 10
    assert n_params(create_model("vgg16")) == total == 14_724_042


def test_param_count_resnet56() -> None:
    total, cin = conv_bn(3, 16), 16
    for width in (16, 32, 64):
        for _ in range(9):
            total += conv_bn(cin, width) + conv_bn(width, width)
            cin = width
    total += 64 * 10 + 10
    assert n_params(create_model("resnet56")) == total == 853_018


def test_param_count_preresnet164() -> None:
    total, cin = 9 * 3 * 16, 16
    for planes in (16, 32, 64):
        for b in range(18):
            total += 2 * cin + cin * planes + 2 * planes + 9 * planes * planes + 2 * planes + planes * 4 * planes
            if b == 0:
                total += cin * 4 * planes  # 1x1 projection shortcut
            cin = 4 * planes
    total += 2 * 256 + 256 * 10 + 10
    assert n_params(create_model("preresnet164")) == total == 1_703_258


# ---- pruned architectures --------------------------------------------------------------------------------------


def test_vgg16_a_builds_the_right_shapes() -> None:
    arch = default_arch("vgg16", cfg=VGG16_A, head="l1")
    model = build_model(arch)
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [v for v in VGG16_A if v != "M"]
    assert convs[1].in_channels == 32
    assert model.classifier[0].in_features == 256 and model.classifier[1].num_features == 512
    assert model.to_arch().same_structure(arch)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_resnet56_pruned_mid_widths() -> None:
    mids = [[14] * 9, [29] * 9, [58] * 9]
    mids[0][7] = 16  # a skipped layer keeps its width
    arch = default_arch("resnet56", mid_widths=mids)
    model = build_model(arch)
    assert model.layer1[7].conv1.out_channels == 16 and model.layer1[8].conv2.in_channels == 14
    assert model.layer3[0].conv1.weight.shape == (58, 32, 3, 3)
    assert model.layer3[0].conv2.weight.shape == (64, 58, 3, 3)
    assert build_model(model.to_arch()).to_arch().config["mid_widths"] == mids
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_to_arch_reads_the_layers_after_surgery() -> None:
    model = create_model("vgg11")
    keep = torch.arange(0, 64, 2)  # drop every other filter of the first conv
    conv, bn, nxt = model.features[0], model.features[1], model.features[4]
    model.features[0] = nn.Conv2d(3, 32, 3, padding=1, bias=False)
    model.features[0].weight.data = conv.weight.data[keep]
    model.features[1] = nn.BatchNorm2d(32)
    model.features[1].weight.data = bn.weight.data[keep]
    model.features[4] = nn.Conv2d(32, 128, 3, padding=1, bias=False)
    model.features[4].weight.data = nxt.weight.data[:, keep]
    arch = model.to_arch()
    assert arch.config["cfg"][0] == 32
    assert shapes(build_model(arch)) == shapes(model)


def test_preresnet_selection_round_trips() -> None:
    base = default_arch("preresnet164")
    assert base.config["select"] is None and len(base.config["cfg"]) == 9 * 18 + 1
    config = copy.deepcopy(dict(base.config))
    kept = [1, 5, 9, 60]
    config["cfg"][3 * 4:3 * 4 + 3] = [len(kept), 10, 12]  # block 4 of stage 1 reads 4 of its 64 input channels
    config["cfg"][-1] = 200
    config["select"] = [None] * 55
    config["select"][4] = kept
    model = build_model(Arch("preresnet", config, 10, (3, 32, 32)))
    block = model.layer1[4]
    assert block.select.kept() == kept and block.select.indexes.shape == (64,)
    assert block.conv1.weight.shape == (10, 4, 1, 1) and block.conv2.weight.shape == (12, 10, 3, 3)
    assert block.conv3.weight.shape == (64, 12, 1, 1)
    assert model.select.kept() == list(range(200)) and model.fc.in_features == 200
    assert "layer1.4.select.indexes" in model.state_dict()
    arch = model.to_arch()
    assert arch.config["select"][4] == kept and arch.config["select"][0] is None
    rebuilt = build_model(Arch.from_json(arch.to_json()))
    rebuilt.load_state_dict(model.state_dict())
    model.eval(), rebuilt.eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(rebuilt(x), model(x))


def test_densenet_selection_round_trips() -> None:
    model = create_model("densenet40")
    assert model.to_arch().config["cfg"][:3] == [24, 36, 48] and model.to_arch().config["cfg"][-1] == 456
    layer = model.dense2[3]
    keep = [0, 3, 4, 100, 200]
    layer.select = ChannelSelection(layer.select.num_channels, keep)
    layer.conv1 = nn.Conv2d(len(keep), 12, 3, padding=1, bias=False)
    arch = model.to_arch()
    assert arch.config["cfg"][13 + 3] == 5 and arch.config["select"][16] == keep
    assert shapes(build_model(arch)) == shapes(model)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_imagenet_resnet_pruned_blocks() -> None:
    arch = default_arch("resnet50", num_classes=5)
    config = copy.deepcopy(dict(arch.config))
    config["blocks"][0][0] = {"mid": [32, 32]}  # ThiNet-style narrower conv1/conv2
    config["blocks"][1][1] = {"mid": [105, 72], "in_select": 205}  # ResNet-50-2x style input selection
    config["blocks"][2][2] = {"mid": [204, 158], "in_select": [0, 2, 4, 6]}
    config["blocks"][3][0] = {"branch": False}  # SSS: the stage's first block keeps only its projection
    config["blocks"][2][5] = {"branch": False}
    model = build_model(Arch("imagenet_resnet", config, 5, (3, 224, 224)))
    assert model.layer1[0].conv1.weight.shape == (32, 64, 1, 1)
    assert model.layer1[0].conv3.weight.shape == (256, 32, 1, 1)
    assert model.layer2[1].conv1.weight.shape == (105, 205, 1, 1)
    assert model.layer2[1].select.kept() == list(range(205))
    assert model.layer3[2].conv1.weight.shape == (204, 4, 1, 1)
    assert not hasattr(model.layer4[0], "conv1") and model.layer4[0].downsample[0].stride == (2, 2)
    assert isinstance(model.layer1[0], torchvision.models.resnet.Bottleneck)
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 5)
    again = model.to_arch()
    assert again.same_structure(Arch("imagenet_resnet", config, 5, (3, 224, 224)))
    assert shapes(build_model(again)) == shapes(model)


def test_resnet34_a_style_first_conv() -> None:
    config = copy.deepcopy(dict(default_arch("resnet34").config))
    config["blocks"][0][1] = {"mid": [45]}
    model = build_model(Arch("imagenet_resnet", config, 10, (3, 224, 224)))
    assert model.layer1[1].conv1.weight.shape == (45, 64, 3, 3)
    assert model.layer1[1].conv2.weight.shape == (64, 45, 3, 3)


@pytest.mark.parametrize(("ours", "theirs"), [("resnet18", "resnet18"), ("resnet50", "resnet50"),
                                              ("vgg11_bn", "vgg11_bn"), ("vgg16_imagenet", "vgg16")])
def test_imagenet_models_match_torchvision_state_dicts(ours: str, theirs: str) -> None:
    with torch.device("meta"):
        mine = create_model(ours, num_classes=1000)
        reference = getattr(torchvision.models, theirs)()
    assert shapes(mine) == shapes(reference)


def test_imagenet_vgg_gap_head() -> None:
    model = create_model("vgg16_imagenet", head="gap", cfg=[16, 16, "M", 32, "M", 64, 128])
    assert isinstance(model.classifier, nn.Linear) and model.classifier.in_features == 128
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 10)


# ---- initialisation as in the seed ----------------------------------------------------------------------------


def assert_conv_fan_out(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and m.weight.numel() >= 4096:
            expected = math.sqrt(2.0 / (m.kernel_size[0] * m.kernel_size[1] * m.out_channels))
            assert m.weight.std().item() == pytest.approx(expected, rel=0.1)
            assert abs(m.weight.mean().item()) < 0.2 * expected


def bn_scales(model: nn.Module) -> set[float]:
    return {v for m in model.modules() if isinstance(m, nn.BatchNorm2d) for v in m.weight.tolist()}


def test_slimming_init() -> None:
    torch.manual_seed(0)
    for name in ("vgg19", "preresnet164", "densenet40"):
        model = create_model(name)
        assert bn_scales(model) == {0.5}
        assert_conv_fan_out(model)
    vgg = create_model("vgg16")
    assert vgg.classifier.weight.std().item() == pytest.approx(0.01, rel=0.1)
    assert vgg.classifier.bias.abs().max().item() == 0


def test_l1_norm_and_weight_level_init() -> None:
    torch.manual_seed(0)
    resnet = create_model("resnet56")
    assert bn_scales(resnet) == {1.0}
    assert_conv_fan_out(resnet)
    assert bn_scales(create_model("preresnet110")) == {1.0}
    assert_conv_fan_out(create_model("resnet50"))  # torchvision's kaiming fan_out is the same law


def test_reset_parameters_is_seeded_and_complete() -> None:
    torch.manual_seed(3)
    a = create_model("resnet20")
    torch.manual_seed(3)
    b = create_model("resnet20")
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k
    with torch.no_grad():
        for p in b.parameters():
            p.fill_(7.0)
    b.train()(torch.randn(4, 3, 32, 32))  # move the BN running statistics too
    for model in (a, b):
        torch.manual_seed(5)
        model.reset_parameters()
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k
