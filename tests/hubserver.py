"""A fake Hugging Face Hub on 127.0.0.1 that speaks the HTTP subset huggingface_hub's client uses, plus its fixture."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

TOKEN = "hf_prunectl_test_token"
GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"


def git_blob_oid(content: bytes) -> str:
    """The git blob id of `content`: what the Hub reports as a regular file's oid and ETag."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class Commit:
    oid: str
    parent: str | None
    message: str
    files: dict[str, bytes]
    date: str


@dataclass
class Repo:
    repo_id: str
    private: bool
    created: str
    branches: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)

    def resolve(self, revision: str) -> Commit | None:
        if revision in self.branches:
            return self.commits[self.branches[revision]]
        return self.commits.get(revision)

    def history(self, branch: str = "main") -> list[Commit]:
        """Commits reachable from `branch`, newest first."""
        out, oid = [], self.branches.get(branch)
        while oid is not None:
            out.append(self.commits[oid])
            oid = self.commits[oid].parent
        return out


class HubError(Exception):
    """An error response: status, X-Error-Code and message (and the commit for EntryNotFound)."""

    def __init__(self, status: int, message: str, code: str | None = None, commit: str | None = None,
                 **body: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.commit, self.body = status, message, code, commit, body


class FakeHub:
    """In-memory repos with real commit hashes, served over HTTP on a random loopback port.

    Every file is offered as a "regular" (inline, base64) upload and served without Xet headers, so the client
    never takes the LFS or Xet paths. Writes need `Authorization: Bearer TOKEN`.
    """

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.lock = threading.Lock()
        self.requests: list[tuple[str, str]] = []
        # headers forced onto every /resolve/ answer (and error answer): a malicious endpoint's ETag, X-Repo-Commit
        self.tamper: dict[str, str] = {}
        self.tamper_only: set[str] = set()  # if set: tamper only the answers for these file paths
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.server.hub = self  # type: ignore[attr-defined]
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def start(self) -> FakeHub:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    # --- state -----------------------------------------------------------------------------------------------
    def create_repo(self, repo_id: str, private: bool = False) -> Repo:
        """Create a repo whose `main` holds one initial commit with `.gitattributes`, as the Hub does."""
        repo = Repo(repo_id, private, _now())
        self.repos[repo_id] = repo
        self.commit(repo, "main", "initial commit", {".gitattributes": GITATTRIBUTES}, [])
        return repo

    def commit(self, repo: Repo, branch: str, message: str, added: dict[str, bytes], deleted: list[str]) -> Commit:
        parent = repo.branches.get(branch)
        files = dict(repo.commits[parent].files) if parent else {}
        for path in deleted:
            files = {p: c for p, c in files.items() if p != path and not p.startswith(path.rstrip("/") + "/")}
        files.update(added)
        body = f"parent {parent}\nmessage {message}\ncount {len(repo.commits)}\n"
        body += "".join(f"{p} {git_blob_oid(c)}\n" for p, c in sorted(files.items()))
        oid = hashlib.sha1(body.encode()).hexdigest()
        repo.commits[oid] = Commit(oid, parent, message, files, _now())
        repo.branches[branch] = oid
        return repo.commits[oid]

    def head(self, repo_id: str, branch: str = "main") -> str:
        return self.repos[repo_id].branches[branch]

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        commit = self.repos[repo_id].resolve(revision)
        assert commit is not None
        return dict(commit.files)

    def put_file(self, repo_id: str, path: str, content: bytes, branch: str = "main") -> str:
        """Commit one file directly (test set-up that bypasses the client); creates the repo if needed."""
        with self.lock:
            repo = self.repos.get(repo_id) or self.create_repo(repo_id)
            return self.commit(repo, branch, f"upload {path}", {path: content}, []).oid


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # one request per connection: no idle keep-alive threads outlive the server
    server_version = "FakeHub/1.0"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence the default stderr log
        pass

    @property
    def hub(self) -> FakeHub:
        return self.server.hub  # type: ignore[attr-defined]

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    # --- plumbing --------------------------------------------------------------------------------------------
    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        self.query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        parts = [p for p in url.path.split("/") if p]
        self.hub.requests.append((method, url.path))
        length = int(self.headers.get("Content-Length") or 0)
        self.body = self.rfile.read(length) if length else b""
        try:
            with self.hub.lock:
                self._route(method, parts)
        except HubError as err:
            headers = {"X-Error-Message": err.message}
            if err.code:
                headers["X-Error-Code"] = err.code
            if err.commit:
                headers["X-Repo-Commit"] = err.commit
            headers.update(self.hub.tamper)
            self._json({"error": err.message, **err.body}, err.status, headers)

    def _route(self, method: str, parts: list[str]) -> None:
        if parts[:2] == ["api", "repos"] and parts[2:] == ["create"] and method == "POST":
            return self._create_repo()
        if parts[:2] == ["api", "whoami-v2"]:
            return self._whoami()
        if parts[:2] == ["api", "validate-yaml"] and method == "POST":
            return self._json({"errors": [], "warnings": []})
        if parts[:2] == ["api", "models"] and len(parts) >= 4:
            return self._repo_api(method, f"{parts[2]}/{parts[3]}", parts[4:])
        if len(parts) >= 5 and parts[2] == "resolve" and method in ("GET", "HEAD"):
            return self._resolve(method, f"{parts[0]}/{parts[1]}", unquote(parts[3]), unquote("/".join(parts[4:])))
        raise HubError(404, f"no route for {method} {self.path}")

    def _repo_api(self, method: str, repo_id: str, rest: list[str]) -> None:
        if not rest and method == "GET":
            return self._info(repo_id, "main")
        action, rev, tail = rest[0], unquote(rest[1]) if len(rest) > 1 else "main", rest[2:]
        if action == "revision" and method == "GET":
            return self._info(repo_id, rev)
        if action == "tree" and method == "GET":
            return self._tree(repo_id, rev, unquote("/".join(tail)))
        if action == "preupload" and method == "POST":
            return self._preupload(repo_id, rev)
        if action == "commit" and method == "POST":
            return self._commit(repo_id, rev)
        if action == "branch" and method == "POST":
            return self._branch(repo_id, rev)
        raise HubError(404, f"no route for {method} {self.path}")

    def _authorised(self) -> bool:
        return self.headers.get("Authorization", "") == f"Bearer {TOKEN}"

    def _require_auth(self) -> None:
        if not self.headers.get("Authorization"):
            raise HubError(401, "Invalid username or password.")
        if not self._authorised():
            raise HubError(401, "Invalid credentials in Authorization header")

    def _repo(self, repo_id: str) -> Repo:
        repo = self.hub.repos.get(repo_id)
        if repo is None or (repo.private and not self._authorised()):
            raise HubError(404 if self._authorised() else 401, "Repository not found", "RepoNotFound")
        return repo

    def _commit_at(self, repo: Repo, revision: str) -> Commit:
        commit = repo.resolve(revision)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit

    def _send(self, status: int, body: bytes, headers: dict[str, str], send_body: bool = True) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def _json(self, data: Any, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(data).encode(), {"Content-Type": "application/json", **(headers or {})})

    # --- endpoints -------------------------------------------------------------------------------------------
    def _whoami(self) -> None:
        self._require_auth()
        self._json({"type": "user", "name": "tester", "orgs": [], "auth": {"type": "access_token"}})

    def _create_repo(self) -> None:
        self._require_auth()
        payload = json.loads(self.body or b"{}")
        if payload.get("type", "model") != "model":
            raise HubError(400, "this fake Hub only hosts model repos")
        repo_id = f"{payload.get('organization') or 'tester'}/{payload['name']}"
        url = f"{self.hub.endpoint}/{repo_id}"
        if repo_id in self.hub.repos:
            raise HubError(409, "You already created this model repo", url=url)  # the client reads the url
        self.hub.create_repo(repo_id, private=payload.get("visibility") == "private" or bool(payload.get("private")))
        self._json({"url": url, "name": repo_id, "id": repo_id})

    def _info(self, repo_id: str, revision: str) -> None:
        repo = self._repo(repo_id)
        commit = self._commit_at(repo, revision)
        owner = repo_id.split("/")[0]
        self._json({
            "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24], "id": repo_id, "modelId": repo_id,
            "author": owner, "sha": commit.oid, "private": repo.private, "disabled": False, "gated": False,
            "lastModified": commit.date, "createdAt": repo.created, "tags": [], "downloads": 0, "likes": 0,
            "siblings": [{"rfilename": p} for p in sorted(commit.files)],
        })

    def _tree(self, repo_id: str, revision: str, path: str) -> None:
        commit = self._commit_at(self._repo(repo_id), revision)
        recursive = self.query.get("recursive", "").lower() in ("1", "true")
        prefix = f"{path.strip('/')}/" if path.strip("/") else ""
        if prefix and not any(p.startswith(prefix) for p in commit.files):
            raise HubError(404, f"{path} does not exist on {revision}", "EntryNotFound", commit.oid)
        entries: dict[str, dict[str, Any]] = {}
        for name, content in sorted(commit.files.items()):
            if not name.startswith(prefix):
                continue
            segments = name[len(prefix):].split("/")
            for depth in range(1, len(segments)):
                folder = prefix + "/".join(segments[:depth])
                if recursive or depth == 1:
                    entries.setdefault(folder, {"type": "directory", "oid": git_blob_oid(folder.encode()),
                                                "size": 0, "path": folder})
            if recursive or len(segments) == 1:
                entries[name] = {"type": "file", "oid": git_blob_oid(content), "size": len(content), "path": name}
        self._json(list(entries.values()))

    def _preupload(self, repo_id: str, revision: str) -> None:
        self._require_auth()
        commit = self._commit_at(self._repo(repo_id), revision)
        files = json.loads(self.body)["files"]
        out = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                "oid": git_blob_oid(commit.files[f["path"]]) if f["path"] in commit.files else None} for f in files]
        self._json({"files": out, "commitOid": commit.oid})

    def _commit(self, repo_id: str, branch: str) -> None:
        self._require_auth()
        repo = self._repo(repo_id)
        if self.query.get("create_pr"):
            raise HubError(400, "pull requests are not supported by this fake Hub")
        if branch not in repo.branches:
            raise HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
        lines = [json.loads(line) for line in self.body.decode().splitlines() if line.strip()]
        header = next((item["value"] for item in lines if item["key"] == "header"), None)
        if header is None or not header.get("summary"):
            raise HubError(400, "commit header with a summary is required")
        if header.get("parentCommit") and header["parentCommit"] != repo.branches[branch]:
            raise HubError(412, "A commit has happened since. Please refresh and try again.")
        added, deleted = {}, []
        for item in lines:
            key, value = item["key"], item["value"]
            if key == "file":
                if value.get("encoding") != "base64":
                    raise HubError(400, "only base64 file content is supported")
                added[value["path"]] = base64.b64decode(value["content"])
            elif key in ("deletedFile", "deletedFolder"):
                deleted.append(value["path"])
            elif key != "header":
                raise HubError(400, f"unsupported commit operation '{key}' (this fake Hub has no LFS/Xet storage)")
        commit = self.hub.commit(repo, branch, header["summary"], added, deleted)
        self._json({"success": True, "commitOid": commit.oid, "commitUrl": f"{self.hub.endpoint}/{repo_id}/commit/"
                    f"{commit.oid}", "hookOutput": ""})

    def _branch(self, repo_id: str, branch: str) -> None:
        self._require_auth()
        repo = self._repo(repo_id)
        if branch in repo.branches:
            raise HubError(409, f"Branch {branch} already exists")
        start = json.loads(self.body or b"{}").get("startingPoint") or "main"
        repo.branches[branch] = self._commit_at(repo, start).oid
        self._json({})

    def _resolve(self, method: str, repo_id: str, revision: str, path: str) -> None:
        commit = self._commit_at(self._repo(repo_id), revision)
        if path not in commit.files:
            raise HubError(404, "Entry not found", "EntryNotFound", commit.oid)
        content = commit.files[path]
        headers = {"Content-Type": "application/octet-stream", "X-Repo-Commit": commit.oid,
                   "ETag": f'"{git_blob_oid(content)}"', "Accept-Ranges": "none"}
        if not self.hub.tamper_only or path in self.hub.tamper_only:
            headers.update(self.hub.tamper)
        self._send(200, content, headers, send_body=method == "GET")


def _patch_client(monkeypatch: pytest.MonkeyPatch, hub: FakeHub, home: Path) -> None:
    """Point huggingface_hub at `hub`: set the env vars, and the constants it already read from them at import."""
    from huggingface_hub import constants

    cache = home / "hub"
    env = {"HF_ENDPOINT": hub.endpoint, "HF_HOME": str(home), "HF_HUB_CACHE": str(cache), "HF_TOKEN": TOKEN,
           "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_UPDATE_CHECK": "1",
           "NO_PROXY": "127.0.0.1,localhost"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN_PATH", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    values: dict[str, Any] = {
        "ENDPOINT": hub.endpoint,
        "HUGGINGFACE_CO_URL_TEMPLATE": hub.endpoint + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_URL_HOSTS": constants.HF_URL_HOSTS | {"127.0.0.1"},
        "HF_HOME": str(home), "HF_HUB_CACHE": str(cache), "HUGGINGFACE_HUB_CACHE": str(cache),
        "HF_ASSETS_CACHE": str(home / "assets"), "HF_XET_CACHE": str(home / "xet"),
        "HF_TOKEN_PATH": str(home / "token"), "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"),
        "HF_HUB_OFFLINE": False, "HF_HUB_DISABLE_TELEMETRY": True, "HF_HUB_DISABLE_XET": True,
        "HF_HUB_DISABLE_UPDATE_CHECK": True,
    }
    for key, patched in values.items():
        if hasattr(constants, key):
            monkeypatch.setattr(constants, key, patched)


class HubFixture:
    """What the `hub` fixture yields: the server, and switches for the client's offline mode and token."""

    def __init__(self, server: FakeHub, monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
        self.server, self.monkeypatch, self.home = server, monkeypatch, home
        self.endpoint = server.endpoint

    def offline(self, enabled: bool = True) -> None:
        from huggingface_hub import constants

        self.monkeypatch.setenv("HF_HUB_OFFLINE", "1" if enabled else "0")
        self.monkeypatch.setattr(constants, "HF_HUB_OFFLINE", enabled)

    def without_token(self) -> None:
        self.monkeypatch.delenv("HF_TOKEN", raising=False)
        (self.home / "token").unlink(missing_ok=True)


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HubFixture]:
    """A running FakeHub that huggingface_hub talks to, with its cache and token under tmp_path."""
    from huggingface_hub import close_session
    from huggingface_hub.utils import disable_progress_bars

    server = FakeHub().start()
    home = tmp_path / "hf-home"
    home.mkdir()
    _patch_client(monkeypatch, server, home)
    close_session()  # drop pooled connections to a previous test's server
    try:
        with disable_progress_bars():  # keep stderr to prunectl's own one-line messages
            yield HubFixture(server, monkeypatch, home)
    finally:
        close_session()
        server.stop()
