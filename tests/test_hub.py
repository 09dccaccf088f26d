"""push/pull against a loopback fake Hub, through the real huggingface_hub client."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from hubserver import hub  # noqa: F401  (the fixture; tests/ is on sys.path)
from typer.testing import CliRunner

from prunectl import engine, paths
from prunectl.cli.app import app
from prunectl.core.hub import parse_ref
from prunectl.engine import hub as hub_engine
from prunectl.errors import BadValueError
from prunectl.runs.store import Run

RUN_FILES = {"config.json", "model.safetensors", "spec.json", "result.json", "metrics.jsonl", "README.md"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """One tiny finished run (LeNet-300-100, 1 epoch on the embedded MNIST subset), shared by the module."""
    root = tmp_path_factory.mktemp("trained")
    with pytest.MonkeyPatch.context() as mp:  # the per-test store isolation of conftest does not cover module scope
        mp.setenv("PRUNECTL_HOME", str(root / "home"))
        mp.setenv("PRUNECTL_DATA_DIR", str(root / "data"))
        spec = engine.baseline_spec("lenet300100", "mnist5k", epochs=1)
        return engine.train(spec, out=root / "run")


@pytest.fixture
def copy_of(trained: Run, tmp_path: Path):  # noqa: F811
    """A factory of private copies of the shared run, for tests that tamper with one."""
    def make(name: str = "run") -> Path:
        target = tmp_path / name
        shutil.copytree(trained.path, target)
        return target
    return make


def cli(*args: str):
    return CliRunner().invoke(app, list(args))


def one_line_error(result) -> str:
    """The command failed with exit 2 and exactly one line on stderr, `error: ...`."""
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def front_matter(text: str) -> dict:
    match = re.match(r"^---\n(.*?)\n---\n", text, re.S)
    assert match, text[:200]
    return yaml.safe_load(match.group(1))


def logits(run: Run) -> torch.Tensor:
    torch.manual_seed(123)
    x = torch.randn(8, 1, 28, 28)
    model = run.model().eval()
    with torch.no_grad():
        return model(x)


def assert_nothing_written(out: Path) -> None:
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


def test_parse_ref():
    assert parse_ref("hf:me/lenet@v1").revision == "v1"
    assert str(parse_ref("hf:me/lenet")) == "hf:me/lenet"
    for bad in ("me/lenet", "hf:lenet", "hf:a/b/c", "hf:me/lenet@", "hf:me/-bad-"):
        with pytest.raises(BadValueError):
            parse_ref(bad)


def test_push_then_pull_gives_identical_logits(hub, trained, tmp_path):  # noqa: F811
    info = hub_engine.push(trained, "hf:alice/lenet")
    repo = hub.server.repos["alice/lenet"]
    assert info["commit"] == hub.server.head("alice/lenet") and info["revision"] == "main"
    # one commit on top of the Hub's initial commit, holding every artefact
    assert [c.message for c in repo.history()][1:] == ["initial commit"]
    assert set(hub.server.files("alice/lenet")) == RUN_FILES | {".gitattributes"}
    commits = [r for r in hub.server.requests if r[0] == "POST" and "/commit/" in r[1]]
    assert len(commits) == 1
    config = json.loads(hub.server.files("alice/lenet")["config.json"])
    assert config["library_name"] == "prunectl" and "prunectl_version" in config and config["family"] == "mlp"

    pulled = hub_engine.pull("hf:alice/lenet", out=tmp_path / "pulled")
    assert torch.equal(logits(pulled), logits(trained))
    assert pulled.id == trained.id and pulled.record == trained.record
    assert pulled.result() == trained.result() and pulled.metrics() == trained.metrics()
    assert pulled.arch().same_structure(trained.arch())
    source = json.loads(pulled.file(paths.SOURCE).read_text())
    assert source["commit"] == info["commit"] == hub.server.head("alice/lenet")
    assert source["repo_id"] == "alice/lenet" and source["revision"] == "main"
    assert sorted(p.name for p in pulled.path.iterdir()) == sorted(
        ["arch.json", "metrics.jsonl", "model.safetensors", "result.json", "source.json", "spec.json"])


def test_pull_default_location_is_reused(hub, trained):  # noqa: F811
    hub_engine.push(trained, "hf:alice/lenet")
    first = cli("pull", "hf:alice/lenet", "--json")
    assert first.exit_code == 0, first.output
    report = json.loads(first.stdout)
    assert Path(report["run"]).parent == paths.runs_root() and Path(report["run"]).name.startswith("pull-")
    assert report["commit"] == hub.server.head("alice/lenet") and report["id"] == trained.id
    again = hub_engine.pull("hf:alice/lenet")
    assert again.path == Path(report["run"])
    # a new push is a new commit, hence a new run directory
    hub.server.put_file("alice/lenet", "notes.txt", b"more")
    assert hub_engine.pull("hf:alice/lenet").path != again.path


def test_model_card_metadata(hub, trained):  # noqa: F811
    hub_engine.push(trained, "hf:alice/lenet", commit_message="first upload")
    assert hub.server.repos["alice/lenet"].history()[0].message == "first upload"
    card = hub.server.files("alice/lenet")["README.md"].decode()
    meta = front_matter(card)
    result = trained.result()
    assert meta["library_name"] == "prunectl"
    assert {"pruning", "prunectl", "train"} <= set(meta["tags"])
    assert meta["datasets"] == ["mnist5k"]
    assert meta["prunectl"]["run"] == trained.id and meta["prunectl"]["stage"] == "train"
    assert "parent" not in meta["prunectl"]
    metric = meta["model-index"][0]["results"][0]["metrics"][0]
    assert metric["type"] == "accuracy" and metric["value"] == pytest.approx(result["final_acc"])
    for fact in ("FLOPs (multiply-adds)", f"{result['flops']:,}", f"{result['params']:,}", "mnist5k", trained.id,
                 "| seed | 0 |", "| epochs | 1 |"):
        assert fact in card, fact


def test_existing_readme_text_is_kept(hub, trained):  # noqa: F811
    user_card = "---\nlicense: mit\ntags:\n- mine\n---\n\n# My LeNet\n\nHand-written notes, keep me.\n"
    hub.server.put_file("alice/card", "README.md", user_card.encode())
    hub_engine.push(trained, "hf:alice/card")
    card = hub.server.files("alice/card")["README.md"].decode()
    assert "# My LeNet\n\nHand-written notes, keep me.\n" in card and "## Use" not in card
    meta = front_matter(card)
    assert meta["license"] == "mit" and meta["library_name"] == "prunectl"
    assert meta["tags"][0] == "mine" and {"pruning", "prunectl"} <= set(meta["tags"])
    assert meta["model-index"][0]["results"][0]["metrics"][0]["type"] == "accuracy"


def test_push_to_a_branch_and_pull_by_revision(hub, trained, tmp_path):  # noqa: F811
    result = cli("push", str(trained.path), "hf:alice/lenet", "--revision", "v1", "--private", "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["revision"] == "v1" and info["commit"] == hub.server.head("alice/lenet", "v1")
    assert hub.server.repos["alice/lenet"].private
    assert "model.safetensors" not in hub.server.files("alice/lenet", "main")
    by_branch = hub_engine.pull("hf:alice/lenet@v1", out=tmp_path / "v1")
    by_commit = hub_engine.pull(f"hf:alice/lenet@{info['commit']}", out=tmp_path / "commit")
    for run in (by_branch, by_commit):
        assert json.loads(run.file("source.json").read_text())["commit"] == info["commit"]
    assert torch.equal(logits(by_branch), logits(trained))


def test_offline_pull_uses_the_cache(hub, trained, tmp_path):  # noqa: F811
    hub_engine.push(trained, "hf:alice/lenet")
    online = hub_engine.pull("hf:alice/lenet", out=tmp_path / "online")
    hub.offline()
    before = len(hub.server.requests)
    offline = hub_engine.pull("hf:alice/lenet", out=tmp_path / "offline")
    assert len(hub.server.requests) == before  # not one HTTP request
    source = json.loads(offline.file("source.json").read_text())
    assert source["commit"] == hub.server.head("alice/lenet")
    assert torch.equal(logits(offline), logits(online))
    hub.server.put_file("alice/other", "config.json", b"{}")
    error = one_line_error(cli("pull", "hf:alice/other", "--out", str(tmp_path / "other")))
    assert "not in the local Hugging Face cache" in error
    assert_nothing_written(tmp_path / "other")


def test_pull_unknown_repo_and_revision(hub, trained, tmp_path):  # noqa: F811
    out = tmp_path / "out"
    assert "alice/missing not found" in one_line_error(cli("pull", "hf:alice/missing", "-o", str(out)))
    hub_engine.push(trained, "hf:alice/lenet")
    error = one_line_error(cli("pull", "hf:alice/lenet@nope", "-o", str(out)))
    assert "revision 'nope' not found" in error
    assert "expected a Hub reference" in one_line_error(cli("pull", "alice/lenet"))
    assert_nothing_written(out)


def test_pull_rejects_a_repo_that_is_not_prunectl(hub, tmp_path):  # noqa: F811
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo("alice/random")
    api.upload_file(path_or_fileobj=os.urandom(512), path_in_repo="weights.bin", repo_id="alice/random")
    out = tmp_path / "out"
    assert "not a prunectl model" in one_line_error(cli("pull", "hf:alice/random", "--out", str(out)))
    api.upload_file(path_or_fileobj=b'{"model_type": "bert"}', path_in_repo="config.json", repo_id="alice/random")
    assert "not a prunectl model" in one_line_error(cli("pull", "hf:alice/random", "--out", str(out)))
    assert_nothing_written(out)


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_pull_rejects_corrupt_weights(hub, trained, tmp_path, damage):  # noqa: F811
    hub_engine.push(trained, "hf:alice/lenet")
    good = trained.file("model.safetensors").read_bytes()
    bad = good[: len(good) // 2] if damage == "truncated" else os.urandom(4096)
    hub.server.put_file("alice/lenet", "model.safetensors", bad)
    out = tmp_path / "out"
    assert "not a readable safetensors file" in one_line_error(cli("pull", "hf:alice/lenet", "--out", str(out)))
    assert_nothing_written(out)


def test_pull_rejects_weights_that_do_not_fit(hub, trained, tmp_path):  # noqa: F811
    hub_engine.push(trained, "hf:alice/lenet")
    config = json.loads(hub.server.files("alice/lenet")["config.json"])
    config["config"]["hidden"] = [200, 50]
    hub.server.put_file("alice/lenet", "config.json", json.dumps(config).encode())
    out = tmp_path / "out"
    assert "do not fit the architecture" in one_line_error(cli("pull", "hf:alice/lenet", "--out", str(out)))
    assert_nothing_written(out)


def test_pull_never_overwrites_a_different_directory(hub, trained, tmp_path):  # noqa: F811
    hub_engine.push(trained, "hf:alice/lenet")
    out = tmp_path / "taken"
    out.mkdir()
    (out / "mine.txt").write_text("precious")
    assert "choose another --out" in one_line_error(cli("pull", "hf:alice/lenet", "--out", str(out)))
    assert (out / "mine.txt").read_text() == "precious" and len(list(out.iterdir())) == 1


def test_push_without_token(hub, trained):  # noqa: F811
    hub.without_token()
    error = one_line_error(cli("push", str(trained.path), "hf:alice/lenet"))
    assert error == "error: no Hugging Face token: set HF_TOKEN or run `hf auth login`"
    assert "alice/lenet" not in hub.server.repos and not hub.server.requests


def test_push_with_a_bad_token_and_the_hub_refusing_anonymous_writes(hub, trained):  # noqa: F811
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    hub.monkeypatch.setenv("HF_TOKEN", "hf_not_the_right_one")
    assert "not authorised" in one_line_error(cli("push", str(trained.path), "hf:alice/lenet"))
    hub.without_token()
    with pytest.raises(HfHubHTTPError) as err:
        HfApi(token=False).create_repo("alice/anonymous")
    assert err.value.response.status_code == 401 and "alice/anonymous" not in hub.server.repos


def test_mask_travels_with_the_run(hub, trained, tmp_path):  # noqa: F811
    from prunectl.core.io import save_tensors

    masked = tmp_path / "masked"
    shutil.copytree(trained.path, masked)
    weights = Run(masked).weights()
    mask = {k: (v.abs() > v.abs().median()).float() for k, v in weights.items() if k.endswith("weight")}
    save_tensors(masked / "mask.safetensors", mask)
    hub_engine.push(masked, "hf:alice/masked")
    assert "mask.safetensors" in hub.server.files("alice/masked")
    pulled = hub_engine.pull("hf:alice/masked", out=tmp_path / "pulled")
    assert pulled.mask() is not None and all(torch.equal(pulled.mask()[k], m) for k, m in mask.items())


def test_push_refuses_an_unfinished_run(hub, trained, tmp_path):  # noqa: F811
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    shutil.copy(trained.file("spec.json"), unfinished / "spec.json")
    assert "has not finished" in one_line_error(cli("push", str(unfinished), "hf:alice/lenet"))
    assert "alice/lenet" not in hub.server.repos


def test_a_pruned_run_keeps_its_lineage_through_the_hub(hub, trained, tmp_path):  # noqa: F811
    pruned = engine.prune(trained, engine.prune_spec(trained, "weight", {"ratio": 0.5, "include_linear": True}), out=tmp_path / "pruned")
    hub_engine.push(pruned, "hf:alice/pruned")
    assert "lineage.json" in hub.server.files("alice/pruned")
    pulled = hub_engine.pull("hf:alice/pruned", out=tmp_path / "pulled")
    assert pulled.lineage() == pruned.lineage() and pulled.id == pruned.id
    spec = engine.finetune_spec(pulled, epochs=1)  # needs the baseline's spec from the lineage
    assert spec.parent == pruned.id and spec.masked and spec.dataset == "mnist5k"
