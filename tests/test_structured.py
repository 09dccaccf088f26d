"""Structured pruning: L1-norm / Network Slimming pick the paper's widths (the edit itself: tests/test_structure.py)."""

from __future__ import annotations

import pytest
import torch
from tinymodels import randomised, structure_examples
from torch import nn

from prunectl.core.hparams import slimming_training
from prunectl.core.spec import Spec
from prunectl.errors import BadValueError
from prunectl.methods import PruneContext, PruneOutcome, get_method, list_methods
from prunectl.methods.l1norm import L1NormSettings
from prunectl.methods.slimming import SlimmingSettings
from prunectl.models import Arch, ArchModel, build_model, create_model
from prunectl.structure import channel_groups

VGG16_A = [32, 64, "M", 128, 128, "M", 256, 256, 256, "M", 256, 256, 256, "M", 256, 256, 256]
SPARSE = PruneContext(training=slimming_training(1e-4))
EXAMPLES = dict(structure_examples())


def tiny(family: str) -> Arch:
    return EXAMPLES[{"preresnet": "preresnet-preresnet20", "densenet": "densenet-densenet10",
                     "imagenet_vgg_bn": "imagenet_vgg-bn_gap"}[family]]



# ---- l1-norm ----

def prune(method: str, model: ArchModel, settings: Spec, context: PruneContext = SPARSE) -> PruneOutcome:
    return get_method(method).prune(model, settings, context)


def test_methods_are_registered() -> None:
    assert {"l1-norm", "slimming"} <= set(list_methods())
    assert get_method("l1-norm").structured and get_method("slimming").structured
    settings = L1NormSettings(ratio=0.5, layer_ratios={"features.0": 0.25}, skip=(2, 3))
    assert L1NormSettings.from_dict(settings.to_dict()) == settings
    assert SlimmingSettings.from_json(SlimmingSettings(ratio=0.4).to_json()) == SlimmingSettings(ratio=0.4)


def test_vgg16_a_has_the_paper_widths() -> None:
    torch.manual_seed(0)
    out = prune("l1-norm", create_model("vgg16"), L1NormSettings(variant="A"))
    arch = out.model.to_arch()
    assert arch.config["cfg"] == VGG16_A and arch.name == "vgg16-l1-A"
    assert out.report["widths"]["features.0"] == 32 and out.report["widths"]["features.3"] == 64


def cifar_expected(depth: int, ratios: tuple[float, ...], skip: set[int]) -> list[int]:
    n = (depth - 2) // 6
    widths = []
    for k in range(1, 3 * n + 1):
        stage = (k - 1) // n
        channels = 16 * 2**stage
        widths.append(channels if 2 * k in skip else int(channels * (1 - ratios[stage])))
    return widths


@pytest.mark.parametrize(("depth", "variant", "ratios", "skip"), [
    (56, "A", (0.1, 0.1, 0.1), {16, 20, 38, 54}),
    (56, "B", (0.6, 0.3, 0.1), {16, 18, 20, 34, 38, 54}),
    (110, "A", (0.5, 0.0, 0.0), {36}),
    (110, "B", (0.5, 0.4, 0.3), {36, 38, 74}),
])
def test_cifar_resnet_variants(depth: int, variant: str, ratios: tuple[float, ...], skip: set[int]) -> None:
    torch.manual_seed(0)
    out = prune("l1-norm", create_model(f"resnet{depth}"), L1NormSettings(variant=variant))
    arch = out.model.to_arch()
    assert [w for stage in arch.config["mid_widths"] for w in stage] == cifar_expected(depth, ratios, skip)
    assert arch.config["stage_widths"] == [16, 32, 64] and arch.name == f"resnet{depth}-l1-{variant}"


@pytest.mark.parametrize(("variant", "ratios"), [("A", (0.3, 0.3, 0.3, 0.0)), ("B", (0.5, 0.6, 0.4, 0.0))])
def test_resnet34_variants(variant: str, ratios: tuple[float, ...]) -> None:
    torch.manual_seed(0)
    skip, expected, k = {2, 8, 14, 16, 26, 28, 30, 32}, [], 0
    for stage, (count, channels) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512), strict=True)):
        for _ in range(count):
            k += 1
            expected.append(channels if 2 * k in skip else int(channels * (1 - ratios[stage])))
    out = prune("l1-norm", create_model("resnet34", input_size=(3, 64, 64)), L1NormSettings(variant=variant))
    blocks = out.model.to_arch().config["blocks"]
    assert [b["mid"][0] for stage in blocks for b in stage] == expected
    assert out.model(torch.zeros(1, 3, 64, 64)).shape == (1, 10)


def test_l1_keeps_the_top_filters() -> None:
    model = randomised(Arch("cifar_vgg", {"cfg": [6, 4], "head": "linear"}, 3, (3, 8, 8)))
    norms = torch.tensor([3.0, 9.0, 1.0, 7.0, 7.0, 2.0])
    with torch.no_grad():
        w = model.features[0].weight
        w.copy_(torch.sign(torch.randn_like(w)) * (norms / w[0].numel()).view(-1, 1, 1, 1))
        model.features[3].weight.copy_(torch.tensor([5.0, 5.0, 5.0, 1.0]).view(-1, 1, 1, 1) / 54)
    out = prune("l1-norm", model, L1NormSettings(ratio=0.5))
    pruned = out.model
    assert torch.equal(pruned.features[0].weight, model.features[0].weight[[1, 3, 4]])
    assert torch.equal(pruned.features[1].running_var, model.features[1].running_var[[1, 3, 4]])
    assert torch.equal(pruned.features[3].weight, model.features[3].weight[[0, 1]][:, [1, 3, 4]])  # ties: lower
    assert torch.equal(pruned.classifier.weight, model.classifier.weight[:, [0, 1]])
    assert out.report["widths"] == {"features.0": 3, "features.3": 2} and out.report["pruned_fraction"] == 0.5


def test_l1_ratio_layer_ratios_skip_and_floor() -> None:
    model = randomised(Arch("cifar_vgg", {"cfg": [6, 4, 8], "head": "linear"}, 3, (3, 8, 8)))
    cfg = prune("l1-norm", model, L1NormSettings(ratio=0.9)).model.to_arch().config["cfg"]
    assert cfg == [1, 1, 1]  # int(C x 0.1) is 0: one filter stays
    settings = L1NormSettings(ratio=0.5, layer_ratios={"features.3": 0.25}, skip=(3,))
    out = prune("l1-norm", model, settings)
    assert out.model.to_arch().config["cfg"] == [3, 3, 8] and out.model.to_arch().name.endswith("-l1-0.5")
    only = prune("l1-norm", model, L1NormSettings(layer_ratios={"features.0": 0.5}))
    assert only.model.to_arch().config["cfg"] == [3, 4, 8]


def test_l1_on_preresnet_prunes_inner_convs_only() -> None:
    model = randomised(tiny("preresnet"))
    cfg = prune("l1-norm", model, L1NormSettings(ratio=0.5)).model.to_arch().config["cfg"]
    assert cfg[:6] == [16, 8, 8, 64, 8, 8] and cfg[-1] == 256


@pytest.mark.parametrize(("settings", "model", "match"), [
    ({"variant": "A"}, "vgg19", "defined for vgg16 \\(A\\), resnet56 \\(A/B\\).*none of them"),
    ({"variant": "B"}, "vgg16", "vgg16 has variants A"),
    ({"ratio": 0.5}, "densenet40", "l1-norm needs channel-groups .*densenet model lacks; families that offer it: "
                                   "cifar_resnet, cifar_vgg, imagenet_resnet, imagenet_vgg, lenet, module, preresnet, timm, torchvision"),
    ({"layer_ratios": {"layer1.0.conv2": 0.5}}, "resnet20", "not a prunable layer"),
    ({"ratio": 0.5, "skip": (2,)}, tiny("preresnet"), "skip takes conv ids"),
])
def test_l1_refusals(settings: dict, model: str | Arch, match: str) -> None:
    with pytest.raises(BadValueError, match=match) as err:
        built = create_model(model) if isinstance(model, str) else build_model(model)
        prune("l1-norm", built, L1NormSettings(**settings))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("kwargs", [{}, {"variant": "A", "ratio": 0.5}, {"variant": "A", "skip": (2,)},
                                    {"ratio": 1.0}, {"ratio": 0.0}, {"layer_ratios": {"x": 1.5}}])
def test_l1_settings_refusals(kwargs: dict) -> None:
    with pytest.raises(BadValueError, match="l1-norm: ") as err:
        L1NormSettings(**kwargs)
    assert "\n" not in str(err.value)


# ---- slimming ----

def two_layer_vgg(gammas: list[list[float]]) -> ArchModel:
    model = randomised(Arch("cifar_vgg", {"cfg": [len(g) for g in gammas], "head": "linear"}, 3, (3, 8, 8)))
    with torch.no_grad():
        for i, g in zip((1, 4), gammas, strict=True):
            model.features[i].weight.copy_(torch.tensor(g))
    return model


@pytest.mark.parametrize(("ratio", "threshold", "cfg"), [(0.5, 0.5, [1, 2]), (0.3, 0.2, [2, 3]), (0.1, 0.05, [4, 3])])
def test_slimming_threshold_is_the_seeds(ratio: float, threshold: float, cfg: list[int]) -> None:
    # pooled |gamma| sorted: 0.05 0.1 0.2 0.3 0.5 0.6 0.7 0.9; threshold = sorted[int(8 x ratio)]; keep > threshold
    model = two_layer_vgg([[0.1, 0.5, -0.2, 0.9], [0.3, 0.05, -0.7, 0.6]])
    notes: list[str] = []
    out = prune("slimming", model, SlimmingSettings(ratio=ratio),
                PruneContext(training=slimming_training(1e-4), note=notes.append))
    assert out.report["threshold"] == pytest.approx(threshold)
    assert out.model.to_arch().config["cfg"] == cfg
    assert out.report["pruned_fraction"] == pytest.approx(1 - sum(cfg) / 8)
    assert out.report["floor_bound"] == [] and notes == []
    assert out.model.to_arch().name == f"cifar_vgg-slim{ratio}"


def test_slimming_floor_keeps_min_channels_and_says_so() -> None:
    model = two_layer_vgg([[0.6, 0.9, 0.7, 0.8], [0.001, 0.004, 0.003, 0.002]])
    notes: list[str] = []
    settings = SlimmingSettings(ratio=0.5, min_channels=2)
    out = prune("slimming", model, settings, PruneContext(training=slimming_training(1e-4), note=notes.append))
    assert out.report["floor_bound"] == ["features.3"]
    assert torch.equal(out.model.features[4].weight, model.features[4].weight[[1, 2]])  # the top-|gamma| two
    assert out.model.to_arch().config["cfg"] == [3, 2]
    assert len(notes) == 1 and "1 layer" in notes[0] and "features.3" in notes[0] and "\n" not in notes[0]


def test_slimming_warns_without_sparsity_training() -> None:
    notes: list[str] = []
    prune("slimming", two_layer_vgg([[0.1, 0.5], [0.3, 0.7]]), SlimmingSettings(ratio=0.5), PruneContext(note=notes.append))
    assert notes[0].startswith("warning: the baseline was not trained with --sparsity")


@pytest.mark.parametrize("family", ["preresnet", "densenet", "imagenet_vgg_bn"])
def test_slimming_round_trips_through_the_arch(family: str) -> None:
    model = randomised(tiny(family))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(-1, 1)
    out = prune("slimming", model, SlimmingSettings(ratio=0.4))
    pruned = out.model
    assert pruned.to_arch().name == f"{model.family}-slim0.4"
    assert 0.3 < out.report["pruned_fraction"] < 0.5 and out.report["floor_bound"] == []
    widths = {g.name: g.channels for g in channel_groups(pruned)}
    assert all(widths[name] == kept for name, kept in out.report["widths"].items())
    record = Arch.from_json(pruned.to_arch().to_json())
    assert record.same_structure(pruned.to_arch())
    rebuilt = build_model(record).eval()
    rebuilt.load_state_dict(pruned.state_dict())
    x = torch.randn(2, *model.input_size)
    with torch.no_grad():
        assert torch.allclose(rebuilt(x), pruned(x))


@pytest.mark.parametrize(("model", "settings", "match"), [
    ("resnet20", {}, "slimming needs bn-scaled-channel-groups .*cifar_resnet model lacks; families that offer it: "
                     "cifar_vgg, densenet, imagenet_vgg, module, preresnet, timm, torchvision"),
    ("lenet5", {}, "lenet model lacks"),
])
def test_slimming_refusals(model: str, settings: dict, match: str) -> None:
    notes: list[str] = []
    with pytest.raises(BadValueError, match=match) as err:
        prune("slimming", create_model(model), SlimmingSettings(**settings), PruneContext(note=notes.append))
    assert "\n" not in str(err.value) and notes == []  # refused before any remark


def test_slimming_needs_batchnorm_and_valid_settings() -> None:
    no_bn = build_model(Arch("imagenet_vgg", {"cfg": [4, "M"], "batch_norm": False, "head": "gap"}, 3, (3, 8, 8)))
    with pytest.raises(BadValueError, match="needs bn-scaled-channel-groups.*e.g. built with BatchNorm layers"):
        prune("slimming", no_bn, SlimmingSettings())
    for kwargs in ({"ratio": 1.0}, {"ratio": 0.0}, {"min_channels": 0}):
        with pytest.raises(BadValueError, match="slimming: "):
            SlimmingSettings(**kwargs)
