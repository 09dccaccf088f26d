"""A malicious Hub endpoint or repo: nothing written outside the cache or run, no file leaked by push (issue 13)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml
from hubserver import hub  # noqa: F401  (the fixture; tests/ is on sys.path)
from test_hub import assert_nothing_written, cli, copy_of, front_matter, one_line_error, trained  # noqa: F401

from prunectl import paths
from prunectl.engine import hub as hub_engine
from prunectl.runs.store import open_run


def files_outside(root: Path, *allowed: Path) -> list[Path]:
    """Every file under `root` that is not inside one of `allowed` (the HF cache, the run store, the output)."""
    found = []
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = Path(dirpath) / name
            if not any(a == path or a in path.parents for a in allowed):
                found.append(path)
    return found


@pytest.fixture
def pushed(hub, trained):  # noqa: F811
    hub_engine.push(trained, "hf:alice/lenet")
    return trained


# --- class 1: writes outside the cache on pull -----------------------------------------------------------------
@pytest.mark.parametrize("revision", ["../../../../X", "main/../../x", "/abs", ".hidden", "a..b", "x.lock", "a//b"])
def test_a_revision_that_is_not_a_safe_ref_is_refused_before_any_request(hub, pushed, tmp_path, revision):  # noqa: F811
    repo = hub.server.repos["alice/lenet"]
    repo.branches[revision] = repo.branches["main"]  # a server that resolves the name anyway
    before = list(hub.server.requests)
    error = one_line_error(cli("pull", f"hf:alice/lenet@{revision}", "--out", str(tmp_path / "out")))
    assert "invalid revision" in error
    assert hub.server.requests == before
    assert not list(tmp_path.rglob("X")) and not list(tmp_path.rglob("x"))
    assert_nothing_written(tmp_path / "out")


def test_push_refuses_an_unsafe_branch_name(hub, trained):  # noqa: F811
    assert "invalid revision" in one_line_error(cli("push", str(trained.path), "hf:alice/lenet", "--revision",
                                                    "../../x"))
    assert "alice/lenet" not in hub.server.repos


@pytest.mark.parametrize("header", ["ETag", "X-Linked-Etag"])
def test_an_absolute_etag_never_becomes_a_path(hub, pushed, tmp_path, header):  # noqa: F811
    escaped = tmp_path / "escaped"
    hub.server.tamper = {header: f'"{escaped}"'}
    error = one_line_error(cli("pull", "hf:alice/lenet", "--out", str(tmp_path / "out")))
    assert "not a sha1/sha256 digest" in error
    assert not list(tmp_path.glob("escaped*"))
    assert files_outside(tmp_path, hub.home, paths.home()) == []
    assert_nothing_written(tmp_path / "out")


def test_an_absolute_etag_on_a_later_file_is_refused_too(hub, pushed, tmp_path):  # noqa: F811
    escaped = tmp_path / "escaped-weights"
    hub.server.tamper, hub.server.tamper_only = {"ETag": f'"{escaped}"'}, {paths.MODEL}
    error = one_line_error(cli("pull", "hf:alice/lenet", "--out", str(tmp_path / "out")))
    assert "not a sha1/sha256 digest" in error and paths.MODEL in error
    assert not list(tmp_path.glob("escaped*")) and files_outside(tmp_path, hub.home, paths.home()) == []
    assert_nothing_written(tmp_path / "out")


@pytest.mark.parametrize("commit", ["../../x", "../../../../escaped", "/abs/commit", "0" * 39])
def test_a_forged_repo_commit_header_is_refused(hub, pushed, tmp_path, commit):  # noqa: F811
    hub.server.tamper = {"X-Repo-Commit": commit}
    error = one_line_error(cli("pull", "hf:alice/lenet", "--out", str(tmp_path / "out")))
    assert "not a 40-hex-digit commit hash" in error
    assert files_outside(tmp_path, hub.home, paths.home()) == []
    assert not [p for p in hub.home.rglob("*") if p.name in ("x", "escaped")]
    assert_nothing_written(tmp_path / "out")


def test_a_forged_commit_on_a_missing_file_writes_no_marker_outside(hub, tmp_path):  # noqa: F811
    hub.server.put_file("alice/empty", "weights.bin", b"x")
    hub.server.tamper = {"X-Repo-Commit": "../../../../no-exist"}
    one_line_error(cli("pull", "hf:alice/empty", "--out", str(tmp_path / "out")))
    assert files_outside(tmp_path, hub.home, paths.home()) == []
    assert not list(tmp_path.rglob("no-exist"))


def test_a_cached_file_redirected_outside_the_cache_is_refused(hub, pushed, tmp_path):  # noqa: F811
    first = hub_engine.pull("hf:alice/lenet", out=tmp_path / "first")
    secret = tmp_path / "secret.safetensors"
    shutil.copyfile(first.file(paths.MODEL), secret)  # a valid file, so only the path check can catch it
    [pointer] = [p for p in hub.home.rglob(paths.MODEL) if "snapshots" in p.parts]
    pointer.unlink()
    pointer.symlink_to(secret)
    error = one_line_error(cli("pull", "hf:alice/lenet", "--out", str(tmp_path / "second")))
    assert "points outside the Hugging Face cache" in error
    assert_nothing_written(tmp_path / "second")


def test_honest_pulls_still_work_with_the_guard(hub, pushed, tmp_path):  # noqa: F811
    run = hub_engine.pull("hf:alice/lenet", out=tmp_path / "ok")
    assert run.id == pushed.id and files_outside(tmp_path, hub.home, paths.home(), tmp_path / "ok") == []


# --- class 3: push leaks nothing, publishes only what loads -----------------------------------------------------

def server_bytes(hub) -> bytes:  # noqa: F811
    return b"".join(c for repo in hub.server.repos.values() for commit in repo.commits.values()
                    for c in commit.files.values())


@pytest.mark.parametrize("name", [paths.METRICS, paths.LINEAGE, paths.RESULT, paths.MODEL])
def test_push_refuses_a_symlinked_file(hub, copy_of, tmp_path, name):  # noqa: F811
    run = copy_of()
    secret = tmp_path / "token"
    secret.write_text("hf_SECRET_token_value\n")
    (run / name).unlink(missing_ok=True)
    (run / name).symlink_to(secret)
    error = one_line_error(cli("push", str(run), "hf:alice/leak"))
    assert "not a regular file" in error and name in error
    assert b"hf_SECRET" not in server_bytes(hub) and "alice/leak" not in hub.server.repos


@pytest.mark.parametrize(("name", "content", "words"), [
    (paths.LINEAGE, '{"not": "a list"}', "is not a list"),
    (paths.METRICS, '{"epoch": 1}\nhf_SECRET_token_value\n', "not valid JSON"),
    (paths.RESULT, '{"final_acc": "hf_SECRET"}', "final_acc"),
    (paths.RESULT, '{"final_acc": NaN}', "not valid JSON"),
])
def test_push_refuses_json_that_does_not_parse_as_its_record(hub, copy_of, name, content, words):  # noqa: F811
    run = copy_of()
    (run / name).write_text(content)
    error = one_line_error(cli("push", str(run), "hf:alice/leak"))
    assert words in error
    assert b"hf_SECRET" not in server_bytes(hub) and "alice/leak" not in hub.server.repos


def test_push_uploads_json_re_serialised_from_its_parsed_content(hub, copy_of):  # noqa: F811
    run = copy_of()
    result = json.loads((run / paths.RESULT).read_text())
    (run / paths.RESULT).write_text(json.dumps(result) + "\n" + " " * 10 + "\n")  # same data, other bytes
    hub_engine.push(run, "hf:alice/clean")
    uploaded = hub.server.files("alice/clean")
    assert json.loads(uploaded[paths.RESULT]) == result
    assert uploaded[paths.RESULT] == (json.dumps(result, indent=2, sort_keys=True) + "\n").encode()


@pytest.mark.parametrize("damage", ["garbage", "other-model"])
def test_push_refuses_weights_that_cannot_be_loaded_into_the_arch(hub, copy_of, tmp_path, damage):  # noqa: F811
    from prunectl.core.io import save_tensors

    run = copy_of()
    if damage == "garbage":
        (run / paths.MODEL).write_bytes(os.urandom(2048))
    else:
        save_tensors(run / paths.MODEL, {"fc.weight": __import__("torch").zeros(3, 3)})
    error = one_line_error(cli("push", str(run), "hf:alice/broken"))
    assert paths.MODEL in error
    assert "alice/broken" not in hub.server.repos


def test_push_refuses_a_mask_that_does_not_fit(hub, copy_of):  # noqa: F811
    import torch

    from prunectl.core.io import save_tensors

    run = copy_of()
    save_tensors(run / paths.MASK, {"layers.0.weight": torch.ones(2, 2)})
    error = one_line_error(cli("push", str(run), "hf:alice/broken"))
    assert paths.MASK in error and "alice/broken" not in hub.server.repos


MARKER_YAML = "---\nlicense: !!python/object/apply:os.system ['touch {marker}']\n---\n\n# Mine\n"


def test_a_hostile_front_matter_in_the_existing_card_is_refused_and_never_run(hub, trained, tmp_path):  # noqa: F811
    marker = tmp_path / "MARKER"
    hub.server.put_file("alice/card", "README.md", MARKER_YAML.format(marker=marker).encode())
    before = hub.server.head("alice/card")
    error = one_line_error(cli("push", str(trained.path), "hf:alice/card"))
    assert "README.md" in error and "front matter" in error
    assert not marker.exists() and hub.server.head("alice/card") == before


def test_generated_front_matter_is_plain_data(hub, copy_of):  # noqa: F811
    run = copy_of()
    record = json.loads((run / paths.SPEC).read_text())
    hub_engine.push(run, "hf:alice/plain")
    card = hub.server.files("alice/plain")["README.md"].decode()
    block = card.split("---\n")[1]
    assert "!!" not in block and "!<" not in block  # no YAML tags at all
    assert isinstance(yaml.load(block, Loader=yaml.BaseLoader), dict)  # parses with the most restricted loader
    assert front_matter(card)["prunectl"]["run"] == record["id"]


def test_pushed_run_still_round_trips(hub, pushed, tmp_path):  # noqa: F811
    run = open_run(hub_engine.pull("hf:alice/lenet", out=tmp_path / "back").path)
    assert run.id == pushed.id


def test_a_tampered_local_copy_of_a_pull_is_not_reused(hub, pushed, tmp_path):  # noqa: F811
    first = hub_engine.pull("hf:alice/lenet")
    assert hub_engine.pull("hf:alice/lenet").path == first.path  # an intact copy is reused
    result = json.loads(first.file(paths.RESULT).read_text())
    first.file(paths.RESULT).write_text(json.dumps({**result, "final_acc": 99.9}))
    error = one_line_error(cli("pull", "hf:alice/lenet"))
    assert "differs from the source" in error and paths.RESULT in error


def test_a_file_declared_over_the_download_limit_is_refused_before_its_body(hub, pushed, tmp_path):  # noqa: F811
    hub.server.tamper = {"X-Linked-Size": str(10**12)}
    error = one_line_error(cli("pull", "hf:alice/lenet", "--out", str(tmp_path / "out")))
    assert "over the limit" in error and "PRUNECTL_MAX_DOWNLOAD_BYTES" in error
    assert_nothing_written(tmp_path / "out")


def test_a_tampered_ref_in_the_cache_is_refused_offline(hub, pushed, tmp_path):  # noqa: F811
    hub_engine.pull("hf:alice/lenet", out=tmp_path / "first")
    [ref] = [p for p in hub.home.rglob("main") if p.parent.name == "refs"]
    ref.write_text("../../../" + ref.read_text())
    hub.offline()
    error = one_line_error(cli("pull", "hf:alice/lenet", "--out", str(tmp_path / "second")))
    assert "refused a cache path outside its snapshots" in error
    assert_nothing_written(tmp_path / "second")
