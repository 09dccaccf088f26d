"""The traced structure provider: Torch-Pruning's groups as ChannelGroups, agreeing with a hand-written family;
methods on library models (round_to, global scope, the empty-group floor); untraceable models; the CLI protocol."""

from __future__ import annotations

import json

import pytest
import torch
from hubserver import hub  # noqa: F401  (the fixture; tests/ is on sys.path)
from torch import nn
from typer.testing import CliRunner

from prunectl.cli.app import app
from prunectl.errors import BadValueError
from prunectl.methods import PruneContext, get_method
from prunectl.methods.l1norm import L1NormSettings
from prunectl.models import create_model
from prunectl.structure import channel_groups, offers

SMALL = (3, 32, 32)
runner = CliRunner()


def _strip(name: str) -> str:
    return name.removeprefix("net.")


def test_traced_resnet18_groups_agree_with_the_hand_written_imagenet_resnet18() -> None:
    traced = channel_groups(create_model("torchvision:resnet18", num_classes=5, input_size=(3, 64, 64)))
    written = channel_groups(create_model("resnet18", num_classes=5, input_size=(3, 64, 64)))
    # Groups inside a block: one producer, one BN, one consumer, the same names and widths.
    inner = {g.name: (g.channels, g.producers, g.norms, {c.module for c in g.consumers})
             for g in written if g.tie is None}
    inner_traced = {_strip(g.name): (g.channels, tuple(map(_strip, g.producers)), tuple(map(_strip, g.norms)),
                                     {_strip(c.module) for c in g.consumers}) for g in traced if g.tie is None}
    assert inner_traced == inner and len(inner) == 8
    # The residual streams: the hand-written family ties one group per writer; the traced one is their union.
    streams = []
    for g in written:
        if g.tie == "residual":
            members = {g.name, *g.tied_with}
            if members not in [s[0] for s in streams]:
                tied = [h for h in written if h.name in members]
                streams.append((members, g.channels, {p for h in tied for p in h.producers},
                                {n for h in tied for n in h.norms}, {c.module for h in tied for c in h.consumers}))
    traced_streams = [({_strip(p) for p in g.producers}, g.channels, {_strip(n) for n in g.norms},
                       {_strip(c.module) for c in g.consumers}) for g in traced if g.tie == "residual"]
    assert len(streams) == len(traced_streams) == 4
    for _, channels, producers, norms, consumers in streams:
        assert (producers, channels, norms, consumers) in traced_streams


def test_depthwise_and_se_layers_fall_into_one_group() -> None:
    groups = channel_groups(create_model("torchvision:efficientnet_b0", num_classes=5, input_size=SMALL))
    model = create_model("torchvision:efficientnet_b0", num_classes=5, input_size=SMALL)
    coupled = [g for g in groups if any(model.get_submodule(p).groups > 1 for p in g.producers)]
    assert coupled
    g = coupled[1]  # an MBConv's expanded channels: expand conv, depthwise conv, their BNs, the SE gate's fc2
    kinds = {type(model.get_submodule(p)).__name__ for p in g.producers}
    assert kinds == {"Conv2d"} and len(g.producers) == 3 and len(g.norms) == 2
    assert any(".fc1" in c.module for c in g.consumers)  # the SE squeeze reads them


def test_l1_norm_round_to_and_global_scope_on_a_traced_model() -> None:
    torch.manual_seed(0)
    model = create_model("torchvision:resnet18", num_classes=5, input_size=SMALL)
    method = get_method("l1-norm")
    out = method.prune(model, L1NormSettings(ratio=0.3, round_to=8), PruneContext())
    widths = out.report["widths"]
    assert all(w % 8 == 0 for w in widths.values()) and widths["net.conv1"] == 48  # int(64 x 0.7) = 44 -> 48
    local = method.prune(model, L1NormSettings(ratio=0.3), PruneContext()).report["widths"]
    assert local["net.conv1"] == 44
    spread = method.prune(model, L1NormSettings(ratio=0.5, scope="global"), PruneContext()).report
    fractions = {n: w / c.channels for n, w in spread["widths"].items() for c in channel_groups(model)
                 if c.name == n}
    assert len({round(f, 2) for f in fractions.values()}) > 1  # layers lose different fractions
    assert abs(spread["pruned_fraction"] - 0.5) < 0.05


def test_a_ratio_that_would_empty_a_group_keeps_one_channel_and_says_so() -> None:
    model = create_model("torchvision:resnet18", num_classes=5, input_size=SMALL)
    notes: list[str] = []
    out = get_method("l1-norm").prune(model, L1NormSettings(ratio=0.99), PruneContext(note=notes.append))
    assert all(w >= 1 for w in out.report["widths"].values()) and out.report["widths"]["net.conv1"] == 1
    assert any("keeps one filter" in n for n in notes)


@pytest.mark.parametrize("method", ["slimming", "weight"])
def test_slimming_and_weight_on_a_traced_model(method: str) -> None:
    model = create_model("torchvision:mobilenet_v2", num_classes=5, input_size=SMALL)
    assert offers(model, "bn-scaled-channel-groups")
    m = get_method(method)
    out = m.prune(model, m.settings(ratio=0.5), PruneContext())
    before = sum(p.numel() for p in model.parameters())
    if method == "slimming":
        assert sum(p.numel() for p in out.model.parameters()) < before
    else:
        assert out.mask and out.model.to_arch().same_structure(model.to_arch())


class Branchy(nn.Module):
    """Data-dependent control flow: one example reaches only one of the two convs."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.left = nn.Conv2d(8, 8, 3, padding=1)
        self.right = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.left(x) if float(x.mean()) >= 0 else self.right(x)
        return self.fc(x.mean((2, 3)))


def test_an_untraceable_model_is_a_one_line_error_naming_the_layer() -> None:
    model = create_model("torchvision:resnet18", num_classes=5, input_size=SMALL)
    model.net = Branchy()
    with pytest.raises(BadValueError, match="layer 'net.(left|right)' is not reached") as err:
        get_method("l1-norm").prune(model, L1NormSettings(ratio=0.5), PruneContext())
    assert "\n" not in str(err.value)


def cli(*args: object) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.mark.slow
def test_the_whole_protocol_on_a_torchvision_model_from_the_cli(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PRUNECTL_HOME", str(tmp_path / "home"))
    model = ["-m", "torchvision:mobilenet_v3_small", "--model-option", "stem=imagenet"]
    base = tmp_path / "base"
    cli("train", *model, "-d", "mnist5k", "--epochs", "1", "--save-init", "--out", base, "--json")
    info = json.loads(cli("info", base, "--json"))
    assert info["family"] == "torchvision" and info["groups"] and info["input_size"] == [1, 28, 28]
    cli("prune", base, "--method", "l1-norm", "--set", "ratio=0.5", "--set", "round_to=8", "--out", tmp_path / "p")
    arch = json.loads(cli("extract-arch", tmp_path / "p"))
    assert arch["family"] == "torchvision" and arch["config"]["edits"]
    (tmp_path / "arch.json").write_text(json.dumps(arch))
    ft = json.loads(cli("finetune", tmp_path / "p", "--epochs", "1", "--json"))
    assert ft["arm"] == "fine-tuned"
    scratch = json.loads(cli("scratch", tmp_path / "arch.json", "-r", base, "--budget", "B", "--json"))
    assert scratch["arm"] == "scratch-B" and scratch["budget"]["flops_ratio"] > 1.5
    lottery = runner.invoke(app, ["lottery", str(base), "--rate", "0.5", "--rounds", "1", "--json"])
    assert lottery.exit_code == 0, lottery.output
    # A record naming an import path is refused in one line, exit 2, and nothing is written.
    arch["config"]["builder"] = "os:system"
    (tmp_path / "evil.json").write_text(json.dumps(arch))
    refused = runner.invoke(app, ["scratch", str(tmp_path / "evil.json"), "-r", str(base), "--out",
                                  str(tmp_path / "evil")])
    assert refused.exit_code == 2 and len(refused.stderr.strip().splitlines()) == 1
    assert "unknown torchvision model 'os:system'" in refused.stderr and not (tmp_path / "evil").exists()


@pytest.mark.slow
def test_a_pruned_torchvision_run_pushes_and_pulls_to_identical_logits(hub, tmp_path, monkeypatch) -> None:  # noqa: F811
    from prunectl import engine
    from prunectl.engine import hub as hub_engine

    monkeypatch.setenv("PRUNECTL_HOME", str(tmp_path / "home"))
    spec = engine.baseline_spec("torchvision:mobilenet_v3_small", "mnist5k", epochs=1)
    base = engine.train(spec, out=tmp_path / "base")
    pruned = engine.prune(base, engine.prune_spec(base, "l1-norm", {"ratio": 0.5}), out=tmp_path / "p")
    hub_engine.push(pruned, "hf:alice/mnv3-l1")
    pulled = hub_engine.pull("hf:alice/mnv3-l1", out=tmp_path / "pulled")
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(pulled.model().eval()(x), pruned.model().eval()(x))
    assert pulled.arch().same_structure(pruned.arch()) and pulled.arch().config["edits"]
