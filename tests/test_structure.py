"""The structure layer: edits preserve the function on every family (channels and blocks), consumers are real,
capabilities gate methods with one-line errors, and bad edits are refused."""

from __future__ import annotations

import copy

import pytest
import torch
from tinymodels import UNSTRUCTURED, randomised, structure_examples
from torch import nn

from prunectl.errors import BadValueError
from prunectl.models import Arch, ArchModel, build_model, create_model, default_arch
from prunectl.models.cifar_resnet import ShortcutA
from prunectl.structure import (
    CAPABILITIES,
    ChannelGroup,
    StructureEdit,
    apply_edit,
    block_groups,
    channel_groups,
    families_offering,
    masked_model,
    model_capabilities,
    require,
)

EXAMPLES = structure_examples()
IDS = [key for key, _ in EXAMPLES]
WITH_BLOCKS = [(k, a) for k, a in EXAMPLES if block_groups(build_model(a))]


def random_keep(model: ArchModel, seed: int = 1) -> dict[str, list[int]]:
    gen = torch.Generator().manual_seed(seed)
    keep = {}
    for g in channel_groups(model):
        if g.prunable and g.channels > 1:
            count = int(torch.randint(1, g.channels, (1,), generator=gen))
            keep[g.name] = sorted(torch.randperm(g.channels, generator=gen)[:count].tolist())
    return keep


def zeroed(model: ArchModel, keep: dict[str, list[int]], drop: tuple[str, ...] = ()) -> ArchModel:
    """The dense model with each removed channel forced to output exactly zero after its BN (or conv, if no BN):
    conv filter (and bias) zero, BN scale and shift zero; for a selection group, the BN channels it drops; and
    each dropped block's branch output zero (its last layer's weight and bias)."""
    ref = copy.deepcopy(model)
    groups = {g.name: g for g in channel_groups(model)}
    blocks = {b.name: b for b in block_groups(model)}
    with torch.no_grad():
        for name, kept in keep.items():
            g: ChannelGroup = groups[name]
            removed = [i for i in range(g.channels) if i not in kept]
            if g.kind == "select":
                removed = [g.meta["selected"][i] for i in removed]
            else:
                for producer in g.producers:  # traced groups may couple several (a residual sum, a depthwise conv)
                    conv = ref.get_submodule(producer)
                    conv.weight[removed] = 0
                    if conv.bias is not None:
                        conv.bias[removed] = 0
            offsets = g.meta.get("norm_offsets", {})
            for norm in g.norms:
                bn = ref.get_submodule(norm)
                at = [offsets.get(norm, 0) + i for i in removed]
                bn.weight[at] = 0
                bn.bias[at] = 0
        for name in drop:
            last = ref.get_submodule(blocks[name].output)
            last.weight.zero_()
            if getattr(last, "bias", None) is not None:
                last.bias.zero_()
    return ref


def assert_preserves(model: ArchModel, keep: dict[str, list[int]], drop: tuple[str, ...] = ()) -> ArchModel:
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    edit = StructureEdit(keep, drop)
    pruned = apply_edit(model, edit)
    assert torch.equal(rng, torch.get_rng_state())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())
    widths = {g.name: g.channels for g in channel_groups(pruned)}
    assert all(widths[name] == len(kept) for name, kept in keep.items())
    assert not {b.name for b in block_groups(pruned)} & set(drop)
    x = torch.randn(3, *model.input_size)
    with torch.no_grad():
        expected, got, dense = zeroed(model, keep, drop)(x), pruned(x), model(x)
        assert torch.equal(masked_model(model, edit)(x), expected)
    assert torch.allclose(got, expected, atol=1e-5)
    assert (dense - expected).abs().max() > 1e-3  # the removed channels / branches did matter
    rebuilt = build_model(pruned.to_arch()).eval()
    assert rebuilt.to_arch().same_structure(pruned.to_arch())
    assert Arch.from_json(pruned.to_arch().to_json()).same_structure(pruned.to_arch())
    rebuilt.load_state_dict(pruned.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.allclose(rebuilt(x), got, atol=1e-6)
    return pruned


# ---- function preservation, over every provider's examples ----

@pytest.mark.parametrize("arch", [a for _, a in EXAMPLES], ids=IDS)
def test_channel_edit_preserves_the_function(arch: Arch) -> None:
    model = randomised(arch)
    keep = random_keep(model)
    assert keep
    assert_preserves(model, keep)


@pytest.mark.parametrize("arch", [a for _, a in WITH_BLOCKS], ids=[k for k, _ in WITH_BLOCKS])
def test_block_removal_preserves_the_function(arch: Arch) -> None:
    model = randomised(arch)
    blocks = block_groups(model)
    firsts = [b for b in blocks if b.first and b.shortcut is not None]
    identities = [b for b in blocks if b.shortcut is None]
    assert firsts and identities  # every example exercises both kinds
    drop = (firsts[0].name, identities[-1].name)
    pruned = assert_preserves(model, {}, drop)
    state, old = pruned.state_dict(), model.state_dict()
    kept_shortcut = [k for k in old if k.startswith(f"{firsts[0].shortcut}.")]
    assert all(torch.equal(state[k], old[k]) for k in kept_shortcut)  # the projection / its keys stay
    assert not any(k.startswith(f"{identities[-1].name}.") for k in state if "downsample" not in k)
    seen: list[bool] = []
    handle = pruned.get_submodule(identities[-1].name).register_forward_hook(
        lambda _m, args, out: seen.append(torch.equal(args[0], out)))
    with torch.no_grad():
        pruned(torch.randn(2, *arch.input_size))
    handle.remove()
    assert seen == [True]  # a removed identity block is gone from the function: output = input
    # channels and blocks in one edit, then again on the result
    keep = {n: v for n, v in random_keep(model, seed=4).items()
            if not any(n in b.groups for b in blocks if b.name in drop)}
    twice = assert_preserves(model, keep, drop)
    if block_groups(twice):
        assert_preserves(randomised(twice.to_arch(), seed=5), {}, (block_groups(twice)[0].name,))


def test_dropping_every_block_leaves_the_shortcuts() -> None:
    model = randomised(default_arch("resnet20", num_classes=5, input_size=(3, 8, 8)))
    pruned = assert_preserves(model, {}, tuple(b.name for b in block_groups(model)))
    assert pruned.to_arch().config["mid_widths"] == [[0, 0, 0]] * 3 and not block_groups(pruned)
    assert sum(p.numel() for p in pruned.parameters()) == sum(p.numel() for n, p in model.named_parameters()
                                                               if not n.startswith("layer"))


@pytest.mark.parametrize("family", ["preresnet-preresnet20", "densenet-densenet10"])
def test_edit_on_an_already_pruned_selection(family: str) -> None:
    model = randomised(dict(EXAMPLES)[family])
    once = assert_preserves(model, random_keep(model, seed=2))
    assert any(g.meta["selected"] != list(range(len(g.meta["selected"])))
               for g in channel_groups(once) if g.kind == "select")
    assert_preserves(once, random_keep(once, seed=3))


def test_existing_configs_build_and_serialise_as_before() -> None:
    for name in ("resnet56", "preresnet164"):
        arch = default_arch(name)
        assert build_model(arch).to_arch().to_dict() == arch.to_dict()
    assert 0 not in [w for s in default_arch("resnet110").config["mid_widths"] for w in s]
    with pytest.raises(BadValueError, match="mid_widths"):
        build_model(default_arch("resnet20", mid_widths=[[16, False, 16], [32] * 3, [64] * 3]))


# ---- consumers ----

LAYERS = (nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm, ShortcutA)


def layer_inputs(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    seen: dict[str, torch.Tensor] = {}
    handles = [m.register_forward_pre_hook(lambda _m, args, n=name: seen.__setitem__(n, args[0].detach().clone()))
               for name, m in model.named_modules() if isinstance(m, LAYERS)]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return seen


def without_relus(model: ArchModel) -> ArchModel:
    """The model with every ReLU an identity: which layer reads which channel does not depend on it, and no
    channel then dies by chance, so the only exact zeros are the ones a test puts in."""
    for name, m in list(model.named_modules()):
        if isinstance(m, nn.ReLU):
            parent, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(parent), leaf, nn.Identity())
    return model


def dead(t: torch.Tensor) -> set[int]:
    """Input indices (dim 1) that are zero over the whole batch and map."""
    return {int(i) for i in torch.nonzero(t.transpose(0, 1).flatten(1).abs().amax(1) == 0).flatten()}


@pytest.mark.parametrize("arch", [a for _, a in EXAMPLES], ids=IDS)
def test_consumers_are_exactly_the_layers_that_read_a_group(arch: Arch) -> None:
    """Zeroing a group's channels (all groups of its residual tie together) makes exactly the listed consumers
    see zero inputs, at exactly the listed input indices."""
    model = without_relus(randomised(arch))
    groups = {g.name: g for g in channel_groups(model)}
    x = torch.randn(8, *arch.input_size)
    dense = layer_inputs(model, x)
    gen = torch.Generator().manual_seed(0)
    for group in groups.values():
        members = [group, *(groups[n] for n in group.tied_with)] if group.tie == "residual" else [group]
        width = min(g.channels for g in members)
        channels = sorted(torch.randperm(width, generator=gen)[:max(1, width // 3)].tolist())
        ref = copy.deepcopy(model)
        expected: dict[str, set[int]] = {}
        with torch.no_grad():
            for g in members:
                for producer in g.producers:
                    layer = ref.get_submodule(producer)
                    layer.weight[channels] = 0
                    if layer.bias is not None:
                        layer.bias[channels] = 0
                for norm in g.norms:
                    bn = ref.get_submodule(norm)
                    bn.weight[[g.norm_index(c) for c in channels]] = 0
                    bn.bias[[g.norm_index(c) for c in channels]] = 0
                for consumer in g.consumers:
                    assert isinstance(model.get_submodule(consumer.module), LAYERS), consumer
                    expected.setdefault(consumer.module, set()).update(
                        i for c in channels for i in consumer.inputs(c))
        own = {n for g in members for n in g.norms}
        masked = layer_inputs(ref, x)
        for name, before in dense.items():
            if name in own:
                continue
            newly = dead(masked[name]) - dead(before)
            assert newly == expected.get(name, set()) - dead(before), (group.name, name)
        assert all(expected[m] - dead(dense[m]) for m in expected), group.name  # every consumer is hit


def test_groups_name_their_ties_and_family_facts() -> None:
    groups = {g.name: g for g in channel_groups(create_model("resnet20"))}
    assert groups["layer1.0.conv1"].prunable and groups["layer1.0.conv1"].meta["conv_id"] == 2
    assert groups["layer1.0.conv1"].consumers[0].module == "layer1.0.conv2"
    stream = groups["layer2.1.conv2"]
    assert stream.tie == "residual" and not stream.prunable and "conv1" in stream.tied_with
    # zero-padding shortcuts carry the stream's channels on to the next stages and the head
    assert [c.module for c in stream.consumers] == ["layer2.2.conv1", "layer3.0.conv1", "layer3.0.shortcut",
                                                    "layer3.1.conv1", "layer3.2.conv1", "fc"]
    vgg = {g.name: g for g in channel_groups(create_model("vgg16_imagenet", input_size=(3, 64, 64)))}
    assert vgg["features.28"].consumers[0].positions == 49
    dense = {g.name: g for g in channel_groups(create_model("densenet40"))}
    assert dense["dense1.1.conv1"].tie == "concat" and dense["dense1.1.conv1"].consumers[0].offset == 36
    assert dense["dense1.1.conv1"].consumers[-1].module == "trans1.bn1"
    blocks = block_groups(create_model("resnet50", input_size=(3, 64, 64)))
    assert [(b.name, b.first, b.shortcut) for b in blocks[:4]] == [
        ("layer1.0", True, "layer1.0.downsample"), ("layer1.1", False, None), ("layer1.2", False, None),
        ("layer2.0", True, "layer2.0.downsample")]
    assert blocks[0].output == "layer1.0.bn3" and len(blocks) == 16


# ---- refusals ----

def test_tied_groups_are_listed_but_refused() -> None:
    model = randomised(dict(EXAMPLES)["cifar_resnet-resnet14"])
    groups = {g.name: g for g in channel_groups(model)}
    assert not groups["layer1.0.conv2"].prunable and not groups["conv1"].prunable
    with pytest.raises(BadValueError, match="cannot be pruned"):
        apply_edit(model, StructureEdit({"layer1.0.conv2": [0, 1]}))


@pytest.mark.parametrize(("keep", "drop", "match"), [
    ({"nope": [0]}, (), "no channel group 'nope'"),
    ({"features.0": []}, (), "keep needs 1 to 8"),
    ({"features.0": [0, 8]}, (), "keep needs"),
    ({"features.0": [1, 1]}, (), "keep needs"),
    ({}, ("layer1.0",), "no removable block 'layer1.0' in this cifar_vgg \\(removable: none\\)"),
])
def test_bad_edits_are_refused(keep: dict[str, list[int]], drop: tuple[str, ...], match: str) -> None:
    with pytest.raises(BadValueError, match=match) as err:
        apply_edit(randomised(dict(EXAMPLES)["cifar_vgg-linear"]), StructureEdit(keep, drop))
    assert "\n" not in str(err.value)


def test_a_kept_group_inside_a_dropped_block_is_refused() -> None:
    model = randomised(dict(EXAMPLES)["cifar_resnet-resnet14"])
    with pytest.raises(BadValueError, match="'layer1.1.conv1' lies in block 'layer1.1', which the edit drops"):
        apply_edit(model, StructureEdit({"layer1.1.conv1": [0]}, ("layer1.1",)))


def test_families_without_a_provider_are_refused() -> None:
    mlp = build_model(UNSTRUCTURED["mlp"])
    with pytest.raises(BadValueError, match="supports the families .*cifar_vgg.*not 'mlp'"):
        channel_groups(mlp)
    assert model_capabilities(mlp) == ["linear-weights"]


# ---- capabilities ----

def test_capabilities_per_family() -> None:
    traced = ["module", "timm", "torchvision"]  # library models and your own nn.Module (prunectl/structure/traced.py)
    assert families_offering("channel-groups") == sorted(["cifar_resnet", "cifar_vgg", "imagenet_resnet",
                                                          "imagenet_vgg", "lenet", "preresnet", *traced])
    assert families_offering("bn-scaled-channel-groups") == sorted(["cifar_vgg", "densenet", "imagenet_vgg",
                                                                    "preresnet", *traced])
    assert families_offering("removable-blocks") == ["cifar_resnet", "imagenet_resnet", "preresnet"]
    no_bn = build_model(dict(EXAMPLES)["imagenet_vgg-fc4096"])
    assert "bn-scaled-channel-groups" not in model_capabilities(no_bn)
    assert set(model_capabilities(create_model("preresnet164"))) == set(CAPABILITIES)


@pytest.mark.parametrize(("model", "capability", "match"), [
    ("densenet40", "channel-groups", "l1-norm needs channel-groups .* densenet model lacks; families that offer "
                                     "it: cifar_resnet, cifar_vgg"),
    ("resnet20", "bn-scaled-channel-groups", "families that offer it: cifar_vgg, densenet, imagenet_vgg, module, "
                                             "preresnet, timm, torchvision"),
    ("vgg16", "removable-blocks", "cifar_vgg model lacks; families that offer it: cifar_resnet, imagenet_resnet"),
])
def test_require_names_the_capability_and_who_offers_it(model: str, capability: str, match: str) -> None:
    with pytest.raises(BadValueError, match=match) as err:
        require(create_model(model), capability, method="l1-norm")
    assert "\n" not in str(err.value)
    require(create_model("resnet20"), "removable-blocks", method="sss")  # offered: no error


def test_a_model_of_an_offering_family_that_lacks_the_capability_is_told_how_to_get_it() -> None:
    bare = apply_edit(create_model("resnet20"), StructureEdit({}, tuple(b.name for b in block_groups(
        create_model("resnet20")))))
    with pytest.raises(BadValueError, match="cifar_resnet model lacks \\(other cifar_resnet configurations offer "
                                            "it, e.g. with residual branches left\\)"):
        require(bare, "removable-blocks", method="sss")
