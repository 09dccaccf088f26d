"""Hugging Face Hub I/O through huggingface_hub: refs, token, model cards, one-commit uploads, snapshot downloads."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prunectl.core import hubguard
from prunectl.errors import BadValueError, HubError

if TYPE_CHECKING:
    from huggingface_hub import ModelCardData

HF_PREFIX = "hf:"
REF_FORMAT = "hf:OWNER/REPO[@REVISION]"
NO_TOKEN = "no Hugging Face token: set HF_TOKEN or run `hf auth login`"
_COMMIT = hubguard.COMMIT


@dataclass(frozen=True)
class HubRef:
    """A model repo on the Hub and an optional revision (branch, tag or commit); `str()` gives the `hf:` form.

    >>> parse_ref("hf:me/lenet@v1")
    HubRef(repo_id='me/lenet', revision='v1')
    """

    repo_id: str
    revision: str | None = None

    def __str__(self) -> str:
        return f"{HF_PREFIX}{self.repo_id}" + (f"@{self.revision}" if self.revision else "")


@dataclass(frozen=True)
class Snapshot:
    """Files of one repo revision in huggingface_hub's cache, and the commit the revision resolved to."""

    path: Path
    repo_id: str
    revision: str | None
    commit: str


def parse_ref(ref: str) -> HubRef:
    """Parse `hf:OWNER/REPO[@REVISION]`; a malformed reference is a one-line BadValueError."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not ref.startswith(HF_PREFIX):
        raise BadValueError(f"expected a Hub reference {REF_FORMAT}, got '{ref}'")
    body = ref[len(HF_PREFIX):]
    repo_id, at, revision = body.partition("@")
    if at and not revision:
        raise BadValueError(f"empty revision after '@' in '{ref}' (expected {REF_FORMAT})")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise BadValueError(f"'{ref}' must name a repo as OWNER/REPO (expected {REF_FORMAT})")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise BadValueError(f"invalid Hugging Face repo id '{repo_id}': {_one_line(err)}") from None
    if revision:
        hubguard.check_revision(revision, ref)
    return HubRef(repo_id, revision or None)


def token() -> str:
    """The user's token: HF_TOKEN, else the one stored by `hf auth login` (never printed or written by prunectl)."""
    from huggingface_hub import get_token

    found = get_token()
    if not found:
        raise HubError(NO_TOKEN)
    return found


def endpoint() -> str:
    from huggingface_hub import constants

    return str(constants.ENDPOINT)


def _one_line(err: BaseException | str) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= 300 else text[:297] + "..."


class _RetryCounter(logging.Handler):
    """Keeps huggingface_hub's warnings ("Retrying in 1s [Retry 2/5].") off the terminal and counts the retries,
    so a failure is one prunectl line that says how often it was tried."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.retries = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "[Retry " in record.getMessage():
            self.retries += 1


@contextmanager
def _quiet_hub() -> Iterator[_RetryCounter]:
    """huggingface_hub's logger routed to a counter, and its progress bars off when stderr is no terminal."""
    hub_logger = logging.getLogger("huggingface_hub")
    counter = _RetryCounter()
    saved = hub_logger.handlers[:], hub_logger.propagate
    hub_logger.handlers, hub_logger.propagate = [counter], False
    if not sys.stderr.isatty():
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    try:
        yield counter
    finally:
        hub_logger.handlers, hub_logger.propagate = saved


@contextmanager
def hub_errors(ref: HubRef, action: str) -> Iterator[None]:
    """Turn huggingface_hub's exceptions into one-line HubErrors that name the repo and say what to do; its retry
    warnings are summarised in that line ("after 3 retries") instead of printed one by one."""
    with _quiet_hub() as counter:
        try:
            with _translated(ref, action):
                yield
        except HubError as err:
            if counter.retries:
                tries = f"{counter.retries} retr{'y' if counter.retries == 1 else 'ies'}"
                raise HubError(f"{err} (after {tries})") from None
            raise


@contextmanager
def _translated(ref: HubRef, action: str) -> Iterator[None]:
    import httpx2
    from huggingface_hub.errors import (
        BadRequestError,
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        HFValidationError,
        IncompleteSnapshotError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    repo, rev = ref.repo_id, ref.revision or "main"
    try:
        yield
    except RevisionNotFoundError:
        raise HubError(f"cannot {action}: revision '{rev}' not found in Hugging Face repo {repo}") from None
    except GatedRepoError:
        raise HubError(f"cannot {action}: {repo} is gated; request access on the Hub first") from None
    except RepositoryNotFoundError:
        raise HubError(f"cannot {action}: Hugging Face repo {repo} not found (or private and your token cannot "
                       "read it)") from None
    except IncompleteSnapshotError:
        raise HubError(f"cannot {action}: the cached copy of {repo}@{rev} is incomplete and the Hub cannot be "
                       "reached") from None
    except LocalEntryNotFoundError:
        raise HubError(f"cannot {action}: {repo}@{rev} is not in the local Hugging Face cache and the Hub cannot be "
                       "reached (offline mode, HF_HUB_OFFLINE=1, or no connection)") from None
    except OfflineModeIsEnabled:
        raise HubError(f"cannot {action}: offline mode is on (HF_HUB_OFFLINE=1); unset it to reach the Hub") from None
    except EntryNotFoundError as err:
        raise HubError(f"cannot {action}: a file is missing from {repo}@{rev} ({_one_line(err)})") from None
    except BadRequestError as err:
        raise HubError(f"cannot {action}: the Hub rejected the request: {_server_message(err)}") from None
    except HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else "?"
        if status in (401, 403):
            raise HubError(f"cannot {action}: not authorised for {repo} (HTTP {status}); check that your token "
                           "has write access") from None
        raise HubError(f"cannot {action}: Hub request failed (HTTP {status}): {_server_message(err)}") from None
    except HFValidationError as err:
        raise BadValueError(f"invalid Hugging Face reference '{ref}': {_one_line(err)}") from None
    except httpx2.TransportError as err:
        raise HubError(f"cannot {action}: cannot reach the Hub at {endpoint()} ({_one_line(err)})") from None
    except ValueError as err:
        if str(err).startswith("Invalid metadata in README.md"):  # create_commit validates the card first
            raise HubError(f"cannot {action}: {_one_line(err)}") from None
        if str(err).startswith("Invalid pointer path"):  # a cache ref or header naming a place outside snapshots/
            raise HubError(f"cannot {action}: huggingface_hub refused a cache path outside its snapshots for {repo}"
                           f"@{rev}; delete that repo's folder in the Hugging Face cache and pull again") from None
        raise


def _server_message(err: Any) -> str:
    return _one_line(getattr(err, "server_message", None) or str(err).strip().splitlines()[0])


# --- model card -------------------------------------------------------------------------------------------------
def card_metadata(*, model_name: str, dataset: str, tags: list[str], accuracy: float | None,
                  extra: Mapping[str, Any]) -> ModelCardData:
    """The card's YAML block as a ModelCardData: library, tags, dataset, and a model-index with test accuracy."""
    from huggingface_hub import EvalResult, ModelCardData

    results = None
    if accuracy is not None:
        results = [EvalResult(task_type="image-classification", task_name="Image Classification",
                              dataset_type=dataset, dataset_name=dataset, dataset_split="test",
                              metric_type="accuracy", metric_name="Test accuracy (last epoch, %)",
                              metric_value=round(float(accuracy), 4))]
    return ModelCardData(library_name="prunectl", tags=tags, datasets=[dataset], metrics=["accuracy"],
                         pipeline_tag="image-classification", model_name=model_name, eval_results=results,
                         **dict(extra))


def render_card(data: ModelCardData, body: str, existing: str | None = None) -> str:
    """A new card (`data` + `body`), or `existing` with only its metadata block updated: the user's text is kept.

    The front matter is written by yaml.safe_dump from JSON-compatible data, so it never holds a tag that
    constructs an object; an existing card whose front matter is not plain YAML data is refused, not rewritten.
    """
    ours = _plain(data.to_dict())
    if existing is None:
        return f"---\n{_safe_yaml(ours)}---\n\n{body.strip()}\n"
    meta, text = _split_card(existing)
    user_tags = [t for t in (meta.get("tags") or []) if isinstance(t, str)]
    merged = {**meta, **{k: v for k, v in ours.items() if k != "tags"}}
    merged["tags"] = user_tags + [t for t in ours.get("tags", []) if t not in user_tags]
    return f"---\n{_safe_yaml(merged)}---\n{text}"


def _plain(value: Any) -> Any:
    """`value` as JSON data (dicts, lists, strings, finite numbers, booleans, null) or a ValueError."""
    return json.loads(json.dumps(value, allow_nan=False, default=str))


def _safe_yaml(data: Mapping[str, Any]) -> str:
    import yaml

    return str(yaml.safe_dump(dict(data), sort_keys=False, allow_unicode=True, default_flow_style=False))


def _split_card(card: str) -> tuple[dict[str, Any], str]:
    """The existing card's metadata (plain data only) and its text after the front matter."""
    import yaml
    from huggingface_hub.repocard import REGEX_YAML_BLOCK

    match = REGEX_YAML_BLOCK.search(card)
    if not match:
        return {}, "\n" + card
    try:
        meta = yaml.safe_load(match.group(2))
    except yaml.YAMLError as err:
        raise HubError(f"cannot push: the repo's README.md front matter is not plain YAML data "
                       f"({_one_line(err)[:120]}); fix or remove that block on the Hub first") from None
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        raise HubError("cannot push: the repo's README.md front matter is not a mapping; fix or remove that "
                       "block on the Hub first")
    return _plain(meta), card[match.end():]


# --- upload / download ------------------------------------------------------------------------------------------
def upload(ref: HubRef, files: Mapping[str, bytes | Path], *, card_data: ModelCardData, card_body: str,
           private: bool = False, commit_message: str, hub_token: str | None = None) -> dict[str, Any]:
    """Create the repo if needed and commit `files` plus a README.md model card to `ref` in ONE commit.

    An existing README.md keeps its text; only its metadata block is merged with `card_data`. A revision that
    names a branch which does not exist yet is created from main.
    """
    from huggingface_hub import CommitOperationAdd, HfApi

    if ref.revision:
        hubguard.check_revision(ref.revision, str(ref))
    if ref.revision and _COMMIT.fullmatch(ref.revision):
        raise BadValueError(f"cannot push to commit {ref.revision}: name a branch with --revision")
    api = HfApi(token=hub_token or token())
    hubguard.guard_session()
    with hub_errors(ref, "push"):
        api.create_repo(ref.repo_id, private=private, exist_ok=True)
        if ref.revision and ref.revision != "main":
            api.create_branch(ref.repo_id, branch=ref.revision, exist_ok=True)
        head = str(api.repo_info(ref.repo_id, revision=ref.revision).sha)
        readme = render_card(card_data, card_body, _existing_readme(api, ref.repo_id, head))
        operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=content if isinstance(content, bytes)
                                         else str(content)) for name, content in files.items()]
        operations.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=readme.encode()))
        # parent_commit: if the branch moved since the README was read, the Hub refuses instead of losing an edit
        info = api.create_commit(ref.repo_id, operations, commit_message=commit_message, revision=ref.revision,
                                 parent_commit=head)
    return {"repo_id": ref.repo_id, "revision": ref.revision or "main", "commit": info.oid,
            "url": info.commit_url, "repo_url": f"{api.endpoint}/{ref.repo_id}",
            "files": sorted([*files, "README.md"])}


def _existing_readme(api: Any, repo_id: str, commit: str) -> str | None:
    from huggingface_hub.errors import RemoteEntryNotFoundError

    try:
        path = api.hf_hub_download(repo_id, "README.md", revision=commit)
    except RemoteEntryNotFoundError:  # only "the Hub says there is none", never "could not ask"
        return None
    return Path(path).read_text(encoding="utf-8-sig")


def download(ref: HubRef, files: list[str], *, marker: str = "config.json") -> Snapshot:
    """Fetch `files` of one revision into huggingface_hub's cache (HF_ENDPOINT, HF_HUB_CACHE, HF_HUB_OFFLINE honoured).

    `marker` is fetched first and alone, which resolves the revision to a commit; a repo without it is not a
    prunectl model and nothing else is downloaded. The rest comes from `snapshot_download` pinned to that commit.
    """
    from huggingface_hub import hf_hub_download, snapshot_download
    from huggingface_hub.errors import RemoteEntryNotFoundError

    if ref.revision:
        hubguard.check_revision(ref.revision, str(ref))
    hubguard.guard_session()  # every header that becomes a cache path is checked before it is used
    with hub_errors(ref, "pull"):
        try:
            first = Path(hf_hub_download(ref.repo_id, marker, revision=ref.revision))
        except RemoteEntryNotFoundError:
            raise HubError(f"{ref} is not a prunectl model (it has no {marker})") from None
        commit = first.parent.name  # the cache keeps each revision under snapshots/<commit hash>/
        if not _COMMIT.fullmatch(commit):
            raise HubError(f"cannot pull {ref}: huggingface_hub returned {first}, not a file of one commit")
        folder = Path(snapshot_download(ref.repo_id, revision=commit, allow_patterns=files))
    if folder.name != commit:
        raise hubguard.UnsafeHubResponse(f"cannot pull {ref}: huggingface_hub returned {folder}, not the snapshot "
                                         f"of commit {commit}")
    hubguard.check_snapshot_files(folder, [marker, *files], f"{ref}@{commit[:12]}")
    return Snapshot(folder, ref.repo_id, ref.revision, commit)


__all__ = ["HF_PREFIX", "HubRef", "Snapshot", "card_metadata", "download", "endpoint", "hub_errors", "parse_ref",
           "render_card", "token", "upload"]
