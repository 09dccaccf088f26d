"""The zoo: every entry's architecture and counts, `zoo:NAME` in info/pull/scratch, and export → pull round trips."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hubserver import hub  # noqa: F401  (the fake-Hub fixture; tests/ is on sys.path)
from typer.testing import CliRunner

from prunectl import engine, paths
from prunectl.cli.app import app
from prunectl.core.flops import count
from prunectl.engine import zoo
from prunectl.errors import BadValueError, OutputError, UnknownNameError
from prunectl.models import build_model
from prunectl.runs.store import Run, prepare_run

CIFAR = ["vgg16-cifar10", "vgg16-a-cifar10", "resnet56-cifar10", "resnet56-a-cifar10", "resnet56-b-cifar10",
         "resnet110-cifar10", "resnet110-a-cifar10", "resnet110-b-cifar10"]
IMAGENET = ["resnet34-a-imagenet", "resnet34-b-imagenet", "thinet30-resnet50-imagenet", "thinet50-resnet50-imagenet",
            "thinet70-resnet50-imagenet", "vgg16-thinet-conv-imagenet", "vgg16-thinet-gap-imagenet",
            "vgg16-thinet-tiny-imagenet", "vgg16-5x-imagenet", "resnet50-2x-imagenet", "sss-resnet26-imagenet",
            "sss-resnet32-imagenet", "sss-resnet41-imagenet"]
# Trained on the embedded data by scripts/export_quick_zoo.py (the quick recipe, seed 0), weights shipped in zoo/.
TRAINED = ["quick-smallcnn-baseline", "quick-smallcnn-l1-50", "quick-smallcnn-fine-tuned", "quick-smallcnn-scratch-e",
           "quick-smallcnn-scratch-b"]
REPO = Path(__file__).resolve().parent.parent
PACKAGE_ZOO = REPO / "zoo"  # the repository's top-level zoo/, shipped in the wheel as `prunectl.zoo`


def cli(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


def ok(*args: object) -> str:
    result = cli(*args)
    assert result.exit_code == 0, result.output
    return result.stdout


def one_line_error(result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


# --- the packaged entries --------------------------------------------------------------------------------------

def test_the_zoo_holds_exactly_the_papers_models():
    assert sorted(e.name for e in zoo.list_entries()) == sorted(CIFAR + IMAGENET + TRAINED)
    assert zoo.zoo_root() == PACKAGE_ZOO


@pytest.mark.parametrize("name", CIFAR + IMAGENET)
def test_recorded_params_and_flops_are_the_built_architectures_count(name):
    entry = zoo.get_entry(name)
    arch = entry.arch
    if name in CIFAR:
        assert (entry.dataset, arch.num_classes, arch.input_size) == ("cifar10", 10, (3, 32, 32))
    else:
        assert (entry.dataset, arch.num_classes, arch.input_size) == ("imagenet", 1000, (3, 224, 224))
    model = build_model(arch)
    counts = count(model, arch.input_size)  # ImageNet models: the one slow part of this file (once each)
    assert (entry.params, entry.flops) == (counts.params, counts.flops)
    assert model.to_arch().same_structure(arch)
    if name in CIFAR:
        assert model.train()(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    if entry.paper_accuracy is not None:
        assert "rethinking-network-pruning" in entry.paper_accuracy["citation"]


def _mids(name: str) -> list[list[int]]:
    return zoo.get_entry(name).arch.config["mid_widths"]


def _blocks(name: str) -> list[list[dict]]:
    return zoo.get_entry(name).arch.config["blocks"]


def test_l1_norm_widths_follow_design_md():
    vgg = zoo.get_entry("vgg16-a-cifar10").arch.config
    assert vgg == {"cfg": [32, 64, "M", 128, 128, "M", 256, 256, 256, "M", 256, 256, 256, "M", 256, 256, 256],
                   "head": "l1"}
    assert zoo.get_entry("vgg16-cifar10").arch.config["head"] == "l1"
    # ResNet-56-A: p = 0.1 everywhere (16→14, 32→28, 64→57), skipped blocks 8, 10, 19, 27 (conv ids 16, 20, 38, 54).
    assert _mids("resnet56-a-cifar10") == [[14] * 7 + [16, 14], [32] + [28] * 8, [64] + [57] * 7 + [64]]
    # ResNet-56-B: p = (0.6, 0.3, 0.1), skipped blocks 8, 9, 10, 17, 19, 27.
    assert _mids("resnet56-b-cifar10") == [[6] * 7 + [16, 16], [32] + [22] * 6 + [32, 22], [64] + [57] * 7 + [64]]
    assert _mids("resnet110-a-cifar10") == [[8] * 17 + [16], [32] * 18, [64] * 18]
    assert _mids("resnet110-b-cifar10") == [[8] * 17 + [16], [32] + [19] * 17, [64] + [44] * 17]
    assert _mids("resnet56-cifar10") == [[16] * 9, [32] * 9, [64] * 9]
    for name in ("resnet56-a-cifar10", "resnet110-b-cifar10"):
        config = zoo.get_entry(name).arch.config
        assert (config["stage_widths"], config["shortcut"]) == ([16, 32, 64], "avgpool")
    # ResNet-34: skipped blocks 1, 4, 7, 8, 13, 14, 15, 16 (conv ids 2, 8, 14, 16, 26, 28, 30, 32).
    a = [[b["mid"][0] for b in stage] for stage in _blocks("resnet34-a-imagenet")]
    assert a == [[64, 44, 44], [128, 89, 89, 128], [256, 179, 179, 179, 179, 256], [512, 512, 512]]
    b = [[b["mid"][0] for b in stage] for stage in _blocks("resnet34-b-imagenet")]
    assert b == [[64, 32, 32], [128, 51, 51, 128], [256, 153, 153, 153, 153, 256], [512, 512, 512]]
    assert zoo.get_entry("resnet34-a-imagenet").arch.config["block"] == "basic"


def test_thinet_sss_and_cp_architectures_follow_design_md():
    thinet = zoo.get_entry("thinet50-resnet50-imagenet").arch.config
    assert (thinet["block"], thinet["stage_widths"]) == ("bottleneck", [64, 128, 256, 512])
    assert thinet["blocks"] == [[{"mid": [w, w]}] * n for w, n in zip((32, 64, 128, 256), (3, 4, 6, 3), strict=True)]
    assert {b["mid"][0] for s in _blocks("thinet30-resnet50-imagenet") for b in s} == {19, 38, 76, 153}
    assert {b["mid"][0] for s in _blocks("thinet70-resnet50-imagenet") for b in s} == {44, 89, 179, 358}

    sss = _blocks("sss-resnet32-imagenet")
    assert [len(stage) for stage in sss] == [3, 4, 6, 3]  # ResNet-50's blocks, removed ones kept as shortcuts
    kept = [sum(b.get("branch", True) for b in stage) for stage in sss]
    first = [stage[0].get("branch", True) for stage in sss]
    assert (kept, first) == ([1, 4, 4, 1], [False, True, True, True])
    assert 2 + 3 * sum(kept) == 32
    assert all(b == {"mid": [w, w]} for stage, w in zip(sss, (64, 128, 256, 512), strict=True) for b in stage
               if b.get("branch", True))
    for name, depth in (("sss-resnet26-imagenet", 26), ("sss-resnet41-imagenet", 41)):
        assert 2 + 3 * sum(b.get("branch", True) for s in _blocks(name) for b in s) == depth

    cp = [[(b["in_select"], *b["mid"]) for b in stage] for stage in _blocks("resnet50-2x-imagenet")]
    assert cp == [
        [(35, 64, 55), (101, 51, 39), (97, 50, 37)],
        [(144, 128, 106), (205, 105, 72), (198, 105, 72), (288, 128, 110)],
        [(278, 256, 225), (418, 209, 147), (407, 204, 158), (423, 212, 155), (412, 211, 148), (595, 256, 213)],
        [(606, 512, 433), (1222, 512, 437), (1147, 512, 440)],
    ]
    vgg = {n: zoo.get_entry(n).arch.config for n in ("vgg16-thinet-conv-imagenet", "vgg16-thinet-gap-imagenet",
                                                      "vgg16-thinet-tiny-imagenet", "vgg16-5x-imagenet")}
    conv = [32, 32, "M", 64, 64, "M", 128, 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M"]
    assert vgg["vgg16-thinet-conv-imagenet"] == {"cfg": conv, "batch_norm": False, "head": "fc4096"}
    assert vgg["vgg16-thinet-gap-imagenet"] == {"cfg": conv[:-1], "batch_norm": False, "head": "gap"}
    assert vgg["vgg16-thinet-tiny-imagenet"]["cfg"][-3:] == [128, 128, 256]
    assert vgg["vgg16-5x-imagenet"]["cfg"] == [24, 22, "M", 41, 51, "M", 108, 89, 111, "M", 184, 276, 228, "M",
                                               512, 512, 512, "M"]


# --- CLI: list, info, errors -----------------------------------------------------------------------------------

def test_zoo_list_json_and_table_list_every_entry():
    listed = json.loads(ok("zoo", "list", "--json"))
    assert sorted(e["name"] for e in listed) == sorted(CIFAR + IMAGENET + TRAINED)
    by_name = {e["name"]: e for e in listed}
    assert by_name["vgg16-a-cifar10"]["params"] == zoo.get_entry("vgg16-a-cifar10").params
    assert by_name["resnet34-a-imagenet"]["paper_accuracy"]["top1"]["scratch-B"] == 73.08
    assert by_name["vgg16-a-cifar10"]["paper_accuracy"] is None and by_name["vgg16-a-cifar10"]["weights"] is None
    table = ok("zoo", "list")
    assert all(name in table for name in CIFAR + IMAGENET) and "multiply-adds" in table


def test_info_takes_a_zoo_name():
    entry = zoo.get_entry("resnet56-b-cifar10")
    report = json.loads(ok("info", "zoo:resnet56-b-cifar10", "--json"))
    assert (report["params"], report["flops"], report["name"]) == (entry.params, entry.flops, entry.name)
    assert "90,907,264" in ok("info", "zoo:resnet56-b-cifar10")


def test_unknown_zoo_name_is_one_line_with_the_closest_match():
    line = one_line_error(cli("info", "zoo:vgg16-a-cifar1"))
    assert "unknown zoo entry 'vgg16-a-cifar1'" in line and "did you mean 'vgg16-a-cifar10'" in line
    one_line_error(cli("pull", "zoo:resnet65-a-cifar10"))
    with pytest.raises(UnknownNameError) as err:
        zoo.get_entry("thinet50-resnet50")
    assert err.value.closest == "thinet50-resnet50-imagenet"
    assert "zoo:NAME" in one_line_error(cli("info", "zoo:"))


def test_pulling_an_architecture_only_entry_says_so(tmp_path):
    line = one_line_error(cli("pull", "zoo:vgg16-a-cifar10", "--out", tmp_path / "x"))
    assert "architecture-only" in line and "info zoo:vgg16-a-cifar10" in line
    assert not (tmp_path / "x").exists()


def test_scratch_b_budget_of_a_zoo_architecture(tmp_path):
    reference = prepare_run(engine.baseline_spec("vgg16", "cifar10", head="l1"), "train", out=tmp_path / "ref")
    arch, parent = engine.resolve_source("zoo:vgg16-a-cifar10")
    assert parent is None and arch.same_structure(zoo.get_entry("vgg16-a-cifar10").arch)
    spec = engine.scratch_spec(arch, reference, budget="B")
    base, pruned = zoo.get_entry("vgg16-cifar10").flops, zoo.get_entry("vgg16-a-cifar10").flops
    assert spec.schedule.epochs == int(160 * base / pruned) == 243


# --- export → pull round trips (a temporary zoo root, never the package) ----------------------------------------

@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    """A tiny LeNet-5 baseline (1 epoch on the embedded MNIST subset) and a 50 % weight-level pruning of it."""
    root = tmp_path_factory.mktemp("zoo-runs")
    with pytest.MonkeyPatch.context() as mp:  # module scope: conftest's per-test isolation does not apply yet
        mp.setenv("PRUNECTL_HOME", str(root / "home"))
        mp.setenv("PRUNECTL_DATA_DIR", str(root / "data"))
        baseline = engine.train(engine.baseline_spec("lenet5", "mnist5k", epochs=1), out=root / "baseline")
        spec = engine.prune_spec(baseline, "weight", {"ratio": 0.5})
        return {"baseline": baseline, "pruned": engine.prune(baseline, spec, out=root / "pruned")}


def logits(run: Run) -> torch.Tensor:
    torch.manual_seed(0)
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        return run.model().eval()(x)


def test_export_then_pull_gives_the_same_model(runs, tmp_path):
    root, baseline = tmp_path / "zoo", runs["baseline"]
    before = sorted(p.name for p in (PACKAGE_ZOO / "entries").iterdir())
    entry = zoo.export_run(baseline, "lenet5-mnist5k", description="LeNet-5 baseline", root=root)
    assert (root / "entries" / "lenet5-mnist5k.json").is_file()
    assert {p.name for p in (root / "weights" / "lenet5-mnist5k").iterdir()} >= {paths.MODEL, paths.SPEC, paths.RESULT}
    again = zoo.get_entry("lenet5-mnist5k", root)
    assert again == entry and again.weights == "weights/lenet5-mnist5k" and not again.masked
    assert (again.method, again.dataset) == ("baseline", "mnist5k")
    assert again.measured["final_acc"] == baseline.result()["final_acc"]
    assert (again.params, again.flops) == (baseline.result()["params"], baseline.result()["flops"])

    pulled = zoo.pull_entry("lenet5-mnist5k", out=tmp_path / "pulled", root=root)
    assert pulled.id == baseline.id and pulled.result() == baseline.result()
    assert torch.equal(logits(pulled), logits(baseline))
    source = json.loads(pulled.file(paths.SOURCE).read_text())
    assert (source["repo_id"], source["revision"], source["zoo"]) == ("zoo:lenet5-mnist5k", "packaged", "lenet5-mnist5k")
    assert zoo.pull_entry("lenet5-mnist5k", out=tmp_path / "pulled", root=root).path == pulled.path  # reused
    default = zoo.pull_entry("lenet5-mnist5k", root=root)
    assert default.path.parent == paths.runs_root() and default.path.name.startswith("zoo-lenet5-mnist5k-")

    with pytest.raises(OutputError):
        zoo.export_run(baseline, "lenet5-mnist5k", description="again", root=root)
    zoo.export_run(baseline, "lenet5-mnist5k", description="again", root=root, replace=True)
    with pytest.raises(BadValueError):
        zoo.export_run(baseline, "Bad Name", description="x", root=root)
    assert sorted(p.name for p in (PACKAGE_ZOO / "entries").iterdir()) == before
    assert not (PACKAGE_ZOO / "weights" / "lenet5-mnist5k").exists()


def test_a_pulled_pruned_entry_works_with_info_finetune_and_scratch(runs, tmp_path, monkeypatch):
    root, pruned, baseline = tmp_path / "zoo", runs["pruned"], runs["baseline"]
    zoo.export_run(pruned, "lenet5-weight50", description="LeNet-5, 50 % of conv weights pruned", root=root)
    arch_only = zoo.ZooEntry(name="lenet5-arch", dataset="mnist5k", method="baseline", description="arch only",
                             source="test", arch=baseline.arch(), params=1, flops=1)
    zoo.write_entry(arch_only, root)
    monkeypatch.setenv(zoo.ZOO_ENV, str(root))

    entry = zoo.get_entry("lenet5-weight50")
    assert entry.masked and entry.method == "weight"
    listed = {e["name"]: e for e in json.loads(ok("zoo", "list", "--json"))}
    assert set(listed) == {"lenet5-weight50", "lenet5-arch"} and listed["lenet5-weight50"]["weights"]
    pulled = json.loads(ok("pull", "zoo:lenet5-weight50", "--out", tmp_path / "pulled", "--json"))
    run = engine.open_run(pulled["run"])
    assert run.has(paths.MASK) and run.lineage() == pruned.lineage()
    assert torch.equal(logits(run), logits(pruned))
    assert json.loads(ok("info", "zoo:lenet5-weight50", "--json"))["flops"] == pruned.result()["flops"]  # sparse

    tuned = json.loads(ok("finetune", tmp_path / "pulled", "--epochs", "1", "--out", tmp_path / "ft", "--json"))
    assert tuned["parent"] == pruned.id
    scratch = json.loads(ok("scratch", "zoo:lenet5-arch", "--reference", baseline.path, "--budget", "E",
                            "--out", tmp_path / "scratch", "--json"))
    assert scratch["epochs"] == 1 and engine.open_run(scratch["run"]).arch().same_structure(baseline.arch())
    assert "architecture-only" in one_line_error(cli("pull", "zoo:lenet5-arch"))


def test_a_hub_backed_entry_pulls_through_the_hub(hub, runs, tmp_path):  # noqa: F811
    root, baseline = tmp_path / "zoo", runs["baseline"]
    engine.push(baseline, "hf:alice/lenet5")
    entry = zoo.export_run(baseline, "lenet5-hub", description="on the Hub", hub_ref="hf:alice/lenet5@main", root=root)
    assert entry.weights == "hf:alice/lenet5@main" and not (root / "weights").exists()
    pulled = zoo.pull_entry("lenet5-hub", out=tmp_path / "pulled", root=root)
    source = json.loads(pulled.file(paths.SOURCE).read_text())
    assert (source["repo_id"], source["zoo"]) == ("alice/lenet5", "lenet5-hub")
    assert torch.equal(logits(pulled), logits(baseline))


@pytest.mark.parametrize("name", TRAINED)
def test_trained_entries_pull_offline_and_reproduce_their_measured_accuracy(name, monkeypatch):
    from prunectl.data import load_dataset
    from prunectl.training.trainer import evaluate

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    entry = zoo.get_entry(name)
    assert entry.has_weights and entry.dataset == "mnist5k"
    run = zoo.pull_entry(name)
    model = run.model().eval()
    accuracy = evaluate(model, load_dataset("mnist5k"), 500, torch.device("cpu"))["test_acc"]
    assert accuracy == pytest.approx(entry.measured["final_acc"], abs=0.2)  # one digit may flip with the layout
    assert count(model, model.input_size).flops == entry.flops


def test_every_command_that_takes_a_run_takes_a_trained_zoo_entry(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    base, pruned = "zoo:quick-smallcnn-baseline", "zoo:quick-smallcnn-l1-50"
    arch = json.loads(ok("extract-arch", pruned))
    assert arch["config"]["cfg"] == zoo.get_entry("quick-smallcnn-l1-50").arch.config["cfg"]
    tuned = json.loads(ok("finetune", pruned, "--epochs", "1", "--json"))
    assert tuned["arm"] == "fine-tuned" and tuned["parent"] == zoo.pull_entry("quick-smallcnn-l1-50").id
    scratch = json.loads(ok("scratch", pruned, "--reference", base, "--budget", "E", "--json"))
    assert scratch["epochs"] == 8  # the baseline's epochs, read from the zoo baseline's spec
    masked = json.loads(ok("prune", base, "--method", "l1-mask", "--ratio", "0.5", "--json"))
    assert masked["method"] == "l1-mask" and masked["flops"] < masked["flops_before"]
    report = json.loads(ok("compare", "zoo:quick-smallcnn-fine-tuned", "zoo:quick-smallcnn-scratch-b", "--json"))
    assert {g["arm"] for g in report["groups"]} == {"fine-tuned", "scratch-B"}
