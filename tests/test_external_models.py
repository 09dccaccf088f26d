"""torchvision:/timm: models as data: built from the library registries only, adapted to the data, pruned through
their traced groups, and rebuilt exactly from the JSON record (no pickle, no import path)."""

from __future__ import annotations

import importlib.util
import json
import warnings

import pytest
import torch
from torch import nn

from prunectl.errors import ArtifactError, BadValueError, UnknownNameError
from prunectl.models import Arch, build_model, create_model, default_arch
from prunectl.structure import StructureEdit, apply_edit, channel_groups, masked_model

HAS_TIMM = importlib.util.find_spec("timm") is not None
needs_timm = pytest.mark.skipif(not HAS_TIMM, reason="timm is an optional extra (pip install 'prunectl[timm]')")
SMALL = (3, 32, 32)


def random_keep(model: nn.Module, seed: int = 0) -> dict[str, list[int]]:
    """Random kept channels (about half) in every group whose masked twin is exact (no LayerNorm over it)."""
    gen = torch.Generator().manual_seed(seed)
    keep = {}
    for g in channel_groups(model):
        if g.prunable and g.channels > 1 and g.meta.get("exact_mask", True):
            count = max(1, g.channels // 2)
            keep[g.name] = sorted(torch.randperm(g.channels, generator=gen)[:count].tolist())
    return keep


def randomise_norms(model: nn.Module) -> nn.Module:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.2)
        for name, p in model.named_parameters():
            if name.endswith("gamma"):  # ConvNeXt's layer scale starts at 1e-6: make the branches count
                p.fill_(1.0)
    return model.eval()


CASES = [pytest.param("torchvision:resnet18", id="tv-resnet18"),
         pytest.param("torchvision:mobilenet_v2", id="tv-mobilenet_v2"),
         pytest.param("torchvision:densenet121", id="tv-densenet121-concat"),
         pytest.param("torchvision:efficientnet_b0", id="tv-efficientnet_b0-se-depthwise"),
         pytest.param("timm:resnet18", id="timm-resnet18", marks=needs_timm),
         pytest.param("timm:convnext_atto", id="timm-convnext_atto", marks=needs_timm)]


@pytest.mark.parametrize("name", CASES)
def test_pruned_equals_masked_and_the_json_rebuilds_it_exactly(name: str) -> None:
    torch.manual_seed(0)
    model = randomise_norms(create_model(name, num_classes=5, input_size=SMALL))
    keep = random_keep(model)
    assert keep
    edit = StructureEdit(keep)
    pruned = apply_edit(model, edit).eval()
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())
    x = torch.randn(2, *SMALL)
    with torch.no_grad():
        got, expected, dense = pruned(x), masked_model(model, edit)(x), model(x)
    assert torch.allclose(got, expected, atol=1e-5)
    assert (dense - expected).abs().max() > 1e-4  # the cut channels mattered
    record = json.loads(pruned.to_arch().to_json())  # plain JSON: kept indices as integers
    assert {e["group"] for e in record["config"]["edits"]} == set(keep)
    rebuilt = build_model(Arch.from_dict(record)).eval()
    state, rebuilt_state = pruned.state_dict(), rebuilt.state_dict()
    assert list(state) == list(rebuilt_state)
    assert all(state[k].shape == rebuilt_state[k].shape for k in state)
    rebuilt.load_state_dict(state, strict=True)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), got)


def test_models_are_adapted_to_the_data_and_the_cifar_stem() -> None:
    model = create_model("torchvision:resnet18", num_classes=10, input_size=(1, 28, 28), stem="cifar")
    assert model.net.conv1.in_channels == 1 and model.net.conv1.kernel_size == (3, 3)
    assert model.net.conv1.stride == (1, 1) and isinstance(model.net.maxpool, nn.Identity)
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    plain = create_model("torchvision:mobilenet_v2", num_classes=7, input_size=(2, 32, 32)).eval()
    assert plain.net.features[0][0].in_channels == 2 and plain.net.features[0][0].stride == (2, 2)
    assert plain(torch.zeros(1, 2, 32, 32)).shape == (1, 7)


def test_unknown_names_and_forbidden_options_are_one_line_errors() -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'resnet18'"):
        default_arch("torchvision:resnet81")
    with pytest.raises(BadValueError, match="'weights' is not allowed"):
        default_arch("torchvision:resnet18", weights="IMAGENET1K_V1")
    with pytest.raises(BadValueError, match="stem must be one of"):
        default_arch("torchvision:resnet18", stem="tiny")


@pytest.mark.parametrize("builder", ["os:system", "subprocess.run", "prunectl.models.small:lenet", "../resnet18"])
def test_a_record_naming_an_import_path_is_refused(builder: str) -> None:
    record = default_arch("torchvision:resnet18", 5, SMALL).to_dict()
    record["config"]["builder"] = builder
    with pytest.raises(UnknownNameError, match="unknown torchvision model"):
        build_model(Arch.from_dict(record))
    record["family"] = "importlib"
    with pytest.raises(UnknownNameError):
        build_model(Arch.from_dict(record))


def test_a_record_whose_shapes_differ_is_refused_naming_the_layer() -> None:
    model = create_model("torchvision:resnet18", num_classes=5, input_size=SMALL)
    group = next(g for g in channel_groups(model) if g.tie is None)
    pruned = apply_edit(model, StructureEdit({group.name: [0, 1, 2]}))
    record = pruned.to_arch().to_dict()
    layer = group.producers[0]
    record["config"]["shapes"][layer][0] = 4
    with pytest.raises(ArtifactError, match=f"'{layer}' has shape"):
        build_model(Arch.from_dict(record))


def test_other_library_versions_rebuild_with_a_warning() -> None:
    model = create_model("torchvision:resnet18", num_classes=5, input_size=SMALL)
    group = next(g for g in channel_groups(model) if g.tie is None)
    record = apply_edit(model, StructureEdit({group.name: [0, 5]})).to_arch().to_dict()
    record["config"]["versions"]["torchvision"] = "0.1.0"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rebuilt = build_model(Arch.from_dict(record))
    assert any("rebuilt with" in str(w.message) for w in caught)
    assert rebuilt.get_submodule(group.producers[0]).out_channels == 2


def test_pruning_twice_keeps_indices_in_the_original_numbering() -> None:
    torch.manual_seed(1)
    model = randomise_norms(create_model("torchvision:resnet18", num_classes=5, input_size=SMALL))
    group = next(g for g in channel_groups(model) if g.tie is None)
    once = apply_edit(model, StructureEdit({group.name: [1, 3, 5, 7, 9]}))
    twice = apply_edit(once, StructureEdit({group.name: [1, 4]}))
    (edit,) = [e for e in twice.to_arch().config["edits"] if e["group"] == group.name]
    assert edit["keep"] == [3, 9] and edit["channels"] == group.channels
    direct = apply_edit(model, StructureEdit({group.name: [3, 9]})).eval()
    x = torch.randn(2, *SMALL)
    with torch.no_grad():
        assert torch.allclose(twice.eval()(x), direct(x), atol=1e-6)


@pytest.mark.skipif(HAS_TIMM, reason="timm is installed")
def test_timm_without_the_extra_names_it() -> None:
    with pytest.raises(BadValueError, match=r"prunectl\[timm\]"):
        default_arch("timm:resnet18")


def test_your_own_module_prunes_rebuilds_and_a_shared_record_needs_explicit_trust(monkeypatch) -> None:
    from prunectl.engine import custom_model
    from prunectl.models import external

    monkeypatch.setattr(external, "TRUSTED_BUILDERS", set())
    monkeypatch.setattr(custom_model, "TRUSTED_BUILDERS", external.TRUSTED_BUILDERS)
    torch.manual_seed(0)
    builder = "torchvision.models:mobilenet_v3_small"
    mine = randomise_norms(__import__("torchvision").models.mobilenet_v3_small(num_classes=5))
    x = torch.randn(2, *SMALL)
    model = custom_model.adopt(mine, x, builder, {"num_classes": 5}).eval()
    with torch.no_grad():
        assert torch.equal(model(x), mine(x))
    out = custom_model.prune_module(model, "l1-norm", {"ratio": 0.5})
    record = out.model.to_arch().to_json()
    rebuilt = build_model(Arch.from_json(record)).eval()
    rebuilt.load_state_dict(out.model.state_dict())
    with torch.no_grad():
        assert torch.equal(rebuilt(x), out.model.eval()(x))
    external.TRUSTED_BUILDERS.clear()  # as in a process that pulled the record
    with pytest.raises(BadValueError, match="PRUNECTL_TRUST_BUILDERS=torchvision.models:mobilenet_v3_small") as err:
        build_model(Arch.from_json(record))
    assert "\n" not in str(err.value)
    monkeypatch.setenv("PRUNECTL_TRUST_BUILDERS", builder)
    assert build_model(Arch.from_json(record)).to_arch().same_structure(out.model.to_arch())
