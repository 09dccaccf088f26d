"""Structured pruning: channel surgery preserves the function, and L1-norm / Network Slimming pick the paper's widths."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from prunectl.core.hparams import slimming_training
from prunectl.core.spec import Spec
from prunectl.errors import BadValueError
from prunectl.methods import PruneContext, PruneOutcome, get_method, list_methods
from prunectl.methods.l1norm import L1NormSettings
from prunectl.methods.slimming import SlimmingSettings
from prunectl.methods.surgery import ChannelGroup, channel_groups, remove_channels
from prunectl.models import Arch, ArchModel, build_model, create_model

VGG16_A = [32, 64, "M", 128, 128, "M", 256, 256, 256, "M", 256, 256, 256, "M", 256, 256, 256]
SPARSE = PruneContext(training=slimming_training(1e-4))



def tiny(family: str) -> Arch:
    """Small members of every family with surgery (ImageNet ones with odd blocks: in_select, a removed branch)."""
    basic = [[{"mid": [4]}, {"mid": [4]}], [{"mid": [8]}], [{"mid": [8]}], [{"mid": [8]}]]
    bottleneck = [[{"mid": [2, 2]}, {"mid": [3, 2], "in_select": [0, 2, 3, 5, 7]}], [{"mid": [4, 4]}, {"branch": False}],
                  [{"mid": [4, 4]}], [{"mid": [4, 4]}]]
    records = {
        "vgg_linear": Arch("cifar_vgg", {"cfg": [8, "M", 12, 10], "head": "linear"}, 5, (3, 8, 8)),
        "vgg_l1": Arch("cifar_vgg", {"cfg": [8, "M", 12, 10], "head": "l1"}, 5, (3, 8, 8)),
        "lenet": Arch("lenet", {"conv_widths": [6, 8], "fc_widths": [12, 10]}, 5, (1, 16, 16)),
        "cifar_resnet": Arch("cifar_resnet", {"depth": 14, "shortcut": "subsample"}, 5, (3, 8, 8)),
        "preresnet": Arch("preresnet", {"depth": 20}, 5, (3, 8, 8)),
        "densenet": Arch("densenet", {"depth": 10, "growth_rate": 4}, 5, (3, 8, 8)),
        "imagenet_basic": Arch("imagenet_resnet", {"block": "basic", "stem_width": 8, "stage_widths": [4, 8, 8, 8],
                                                   "blocks": basic}, 5, (3, 32, 32)),
        "imagenet_bottleneck": Arch("imagenet_resnet", {"block": "bottleneck", "stem_width": 8,
                                                        "stage_widths": [2, 4, 4, 4], "blocks": bottleneck}, 5,
                                    (3, 32, 32)),
        "imagenet_vgg_bn": Arch("imagenet_vgg", {"cfg": [8, "M", 8, "M", 6, "M", 6, "M", 8, "M"], "batch_norm": True,
                                                 "head": "gap"}, 5, (3, 32, 32)),
        "imagenet_vgg_fc": Arch("imagenet_vgg", {"cfg": [4, "M", 6, "M"], "batch_norm": False, "head": "fc4096"}, 5,
                                (3, 8, 8)),
    }
    return records[family]


def randomised(arch: Arch, seed: int = 0) -> ArchModel:
    """A model in eval mode with random BN statistics, scales and shifts and random biases."""
    torch.manual_seed(seed)
    model = build_model(arch).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.0)
                m.bias.normal_(0, 0.2)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 1 / m.in_features**0.5)
                m.bias.normal_(0, 0.1)
            elif isinstance(m, nn.Conv2d) and m.bias is not None:
                m.bias.normal_(0, 0.1)
    return model


def random_keep(model: ArchModel, seed: int = 1) -> dict[str, list[int]]:
    gen = torch.Generator().manual_seed(seed)
    keep = {}
    for g in channel_groups(model):
        if g.prunable and g.channels > 1:
            count = int(torch.randint(1, g.channels, (1,), generator=gen))
            keep[g.name] = sorted(torch.randperm(g.channels, generator=gen)[:count].tolist())
    return keep


def zeroed(model: ArchModel, keep: dict[str, list[int]]) -> ArchModel:
    """The dense model with each removed channel forced to output exactly zero after its BN (or conv, if no BN):
    conv filter (and bias) zero, BN scale and shift zero; for a selection group, the BN channels it drops."""
    ref = copy.deepcopy(model)
    groups = {g.name: g for g in channel_groups(model)}
    with torch.no_grad():
        for name, kept in keep.items():
            g: ChannelGroup = groups[name]
            removed = [i for i in range(g.channels) if i not in kept]
            if g.kind == "select":
                removed = [g.meta["selected"][i] for i in removed]
            else:
                conv = ref.get_submodule(str(g.conv))
                conv.weight[removed] = 0
                if conv.bias is not None:
                    conv.bias[removed] = 0
            if g.bn is not None:
                bn = ref.get_submodule(g.bn)
                bn.weight[removed] = 0
                bn.bias[removed] = 0
    return ref


def assert_preserves(model: ArchModel, keep: dict[str, list[int]]) -> ArchModel:
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    pruned = remove_channels(model, keep)
    assert torch.equal(rng, torch.get_rng_state())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    widths = {g.name: g.channels for g in channel_groups(pruned)}
    assert all(widths[name] == len(kept) for name, kept in keep.items())
    x = torch.randn(3, *model.input_size)
    with torch.no_grad():
        expected, got, dense = zeroed(model, keep)(x), pruned(x), model(x)
    assert torch.allclose(got, expected, atol=1e-5)
    assert (dense - expected).abs().max() > 1e-3  # the removed channels did matter
    rebuilt = build_model(pruned.to_arch()).eval()
    assert rebuilt.to_arch().same_structure(pruned.to_arch())
    rebuilt.load_state_dict(pruned.state_dict())
    with torch.no_grad():
        assert torch.allclose(rebuilt(x), got, atol=1e-6)
    return pruned


# ---- surgery ----

@pytest.mark.parametrize("family", ["vgg_linear", "vgg_l1", "lenet", "cifar_resnet", "preresnet", "densenet",
                                    "imagenet_basic", "imagenet_bottleneck", "imagenet_vgg_bn", "imagenet_vgg_fc"])
def test_surgery_preserves_the_function(family: str) -> None:
    model = randomised(tiny(family))
    keep = random_keep(model)
    assert keep
    assert_preserves(model, keep)


@pytest.mark.parametrize("family", ["preresnet", "densenet"])
def test_surgery_on_an_already_pruned_selection(family: str) -> None:
    model = randomised(tiny(family))
    once = assert_preserves(model, random_keep(model, seed=2))
    assert any(g.meta["selected"] != list(range(len(g.meta["selected"])))
               for g in channel_groups(once) if g.kind == "select")
    assert_preserves(once, random_keep(once, seed=3))


def test_tied_groups_are_listed_but_refused() -> None:
    model = randomised(tiny("cifar_resnet"))
    groups = {g.name: g for g in channel_groups(model)}
    assert groups["layer1.0.conv1"].prunable and groups["layer1.0.conv1"].meta["conv_id"] == 2
    assert not groups["layer1.0.conv2"].prunable and not groups["conv1"].prunable
    with pytest.raises(BadValueError, match="cannot be pruned"):
        remove_channels(model, {"layer1.0.conv2": [0, 1]})


@pytest.mark.parametrize(("keep", "match"), [
    ({"nope": [0]}, "no channel group 'nope'"),
    ({"features.0": []}, "keep needs 1 to 8"),
    ({"features.0": [0, 8]}, "keep needs"),
    ({"features.0": [1, 1]}, "keep needs"),
])
def test_surgery_rejects_bad_keep_lists(keep: dict[str, list[int]], match: str) -> None:
    with pytest.raises(BadValueError, match=match) as err:
        remove_channels(randomised(tiny("vgg_linear")), keep)
    assert "\n" not in str(err.value)


def test_surgery_refuses_families_without_it() -> None:
    with pytest.raises(BadValueError, match="channel pruning supports the families .*cifar_vgg.*not 'mlp'"):
        channel_groups(create_model("lenet300100"))


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
    ({"ratio": 0.5}, "densenet40", "l1-norm prunes conv filters of .*; not 'densenet'"),
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
    ("resnet20", {}, "slimming supports cifar_vgg, densenet, imagenet_vgg, preresnet .*not 'cifar_resnet'"),
    ("lenet5", {}, "not 'lenet'"),
])
def test_slimming_refusals(model: str, settings: dict, match: str) -> None:
    notes: list[str] = []
    with pytest.raises(BadValueError, match=match) as err:
        prune("slimming", create_model(model), SlimmingSettings(**settings), PruneContext(note=notes.append))
    assert "\n" not in str(err.value) and notes == []  # refused before any remark


def test_slimming_needs_batchnorm_and_valid_settings() -> None:
    no_bn = build_model(Arch("imagenet_vgg", {"cfg": [4, "M"], "batch_norm": False, "head": "gap"}, 3, (3, 8, 8)))
    with pytest.raises(BadValueError, match="needs BatchNorm"):
        prune("slimming", no_bn, SlimmingSettings())
    for kwargs in ({"ratio": 1.0}, {"ratio": 0.0}, {"min_channels": 0}):
        with pytest.raises(BadValueError, match="slimming: "):
            SlimmingSettings(**kwargs)
