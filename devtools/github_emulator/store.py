"""In-memory data model of the GitHub emulator: tokens, repositories, issues, pull requests.

Standard library only. Everything that mutates state takes ``Store.lock`` (an RLock), so the
HTTP server threads and test code can use one store concurrently.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

GHOST_LOGIN = "ghost"
GHOST_ID = 10137
DEFAULT_AUTHOR = "octocat"
RATE_WINDOW_SECONDS = 3600

_UNSET: Any = object()


# --------------------------------------------------------------------------- time helpers


def to_utc(value: Any) -> datetime | None:
    """Normalise a datetime / epoch number / ISO string to an aware UTC datetime, whole seconds.

    Naive datetimes are taken to be UTC.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise TypeError(f"not a timestamp: {value!r}")
    if isinstance(value, int | float):
        value = datetime.fromtimestamp(int(value), UTC)
    elif isinstance(value, str):
        value = parse_iso8601(value)
    if not isinstance(value, datetime):
        raise TypeError(f"not a timestamp: {value!r}")
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).replace(microsecond=0)


def parse_iso8601(text: str) -> datetime:
    """Parse the ISO 8601 forms GitHub accepts for ``since``. Raises ValueError if malformed."""
    text = text.strip()
    if not text:
        raise ValueError("empty timestamp")
    # A literal "+" in an un-encoded query string arrives as a space: "...T10:00:00 02:00".
    if len(text) > 19 and text[-6] == " " and text[-3] == ":":
        text = text[:-6] + "+" + text[-5:]
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def iso(value: datetime | None) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value is not None else None


def epoch(value: datetime) -> int:
    return int(value.timestamp())


# --------------------------------------------------------------------------- records


@dataclass(slots=True)
class User:
    login: str
    id: int
    type: str = "User"  # "User" or "Organization"


@dataclass(slots=True)
class TokenState:
    token: str
    login: str
    user_id: int
    limit: int
    remaining: int
    reset: int  # epoch seconds (emulator clock)
    revoked: bool = False
    window: int = 0  # bumped whenever the window refills / is reset
    # GraphQL has its own primary budget (resource "graphql"), counted in points.
    graphql_limit: int = 5000
    graphql_remaining: int = 5000
    graphql_reset: int = 0  # epoch seconds (emulator clock)

    @property
    def used(self) -> int:
        return max(self.limit - self.remaining, 0)

    @property
    def graphql_used(self) -> int:
        return max(self.graphql_limit - self.graphql_remaining, 0)


@dataclass(slots=True)
class RepoRecord:
    id: int
    owner: str
    name: str
    private: bool = False
    default_branch: str = "main"
    description: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"


@dataclass(slots=True)
class ItemRecord:
    """An issue or a pull request. Issues and PRs share the repository's number sequence.

    ``id`` is the pull-request id for a PR and the issue id for a plain issue; ``issue_id`` is
    always the issue id (a PR is also an issue on GitHub, with a different id).
    """

    repo: str
    number: int
    is_pull: bool
    id: int
    issue_id: int
    title: str
    author: str | None  # None: deleted account, rendered as the "ghost" user
    state: str  # "open" | "closed"
    created_at: datetime
    updated_at: datetime
    closed_at: datetime | None = None
    merged_at: datetime | None = None
    draft: bool = False
    body: str | None = None
    additions: int = 0
    deletions: int = 0
    changed_files: int = 0
    commits: int = 1
    comments: int = 0
    review_comments: int = 0
    base_ref: str = "main"
    head_ref: str = ""
    head_sha: str = ""
    base_sha: str = ""
    merge_commit_sha: str | None = None
    merged_by: str | None = None
    labels: tuple[str, ...] = ()
    locked: bool = False

    @property
    def pull_id(self) -> int | None:
        return self.id if self.is_pull else None

    @property
    def merged(self) -> bool:
        return self.merged_at is not None

    @property
    def kind(self) -> str:
        return "pull" if self.is_pull else "issue"


# Fields callers may pass to add_pull / add_issue / update.
EDITABLE_FIELDS = frozenset(
    {
        "title",
        "author",
        "state",
        "created_at",
        "updated_at",
        "closed_at",
        "merged_at",
        "draft",
        "body",
        "additions",
        "deletions",
        "changed_files",
        "commits",
        "comments",
        "review_comments",
        "base_ref",
        "head_ref",
        "head_sha",
        "base_sha",
        "merge_commit_sha",
        "merged_by",
        "labels",
        "locked",
    }
)
_TIME_FIELDS = frozenset({"created_at", "updated_at", "closed_at", "merged_at"})


@dataclass(slots=True)
class _RepoState:
    record: RepoRecord
    items: dict[int, ItemRecord] = field(default_factory=dict)
    next_number: int = 1
    # (kind, state, sort, direction) -> sorted list; cleared on every mutation of this repo.
    sorted_cache: dict[tuple[str, str, str, str], list[ItemRecord]] = field(default_factory=dict)


def _sha(*parts: object) -> str:
    return hashlib.sha1(":".join(map(str, parts)).encode(), usedforsecurity=False).hexdigest()


# --------------------------------------------------------------------------- the store


class Store:
    """Thread-safe emulator state plus the Python API used to seed and mutate it."""

    def __init__(self, rate_window_seconds: int = RATE_WINDOW_SECONDS) -> None:
        self.lock = threading.RLock()
        # How long a primary rate-limit window lasts (REST and GraphQL): GitHub's hour, or
        # less, so a load run sees a token that ran dry recover.
        self.rate_window_seconds = rate_window_seconds
        self._clock_offset = 0.0
        self._users: dict[str, User] = {}
        self._tokens: dict[str, TokenState] = {}
        self._repos: dict[str, _RepoState] = {}  # key: lower-cased full name
        self._user_ids = itertools.count(1001)
        self._repo_ids = itertools.count(700_000_001)
        self._issue_ids = itertools.count(2_100_000_001)
        self._pull_ids = itertools.count(1_900_000_001)

    # ------------------------------------------------------------------ clock

    def now(self) -> datetime:
        """Emulator clock: aware UTC datetime, whole seconds (real time + offset)."""
        return datetime.fromtimestamp(int(time.time() + self._clock_offset), UTC)

    def advance(self, seconds: float | timedelta) -> datetime:
        """Move the emulator clock forward; returns the new ``now()``."""
        if isinstance(seconds, timedelta):
            seconds = seconds.total_seconds()
        with self.lock:
            self._clock_offset += float(seconds)
        return self.now()

    # ------------------------------------------------------------------ users & tokens

    def _user(self, login: str, type_: str = "User") -> User:
        key = login.lower()
        user = self._users.get(key)
        if user is None:
            user = User(login=login, id=next(self._user_ids), type=type_)
            self._users[key] = user
        return user

    def user_for(self, login: str | None) -> User:
        if login is None:
            return User(login=GHOST_LOGIN, id=GHOST_ID)
        with self.lock:
            return self._user(login)

    def add_token(
        self,
        token: str,
        login: str = "octocat",
        rate_limit: int = 5000,
        graphql_rate_limit: int = 5000,
    ) -> TokenState:
        with self.lock:
            user = self._user(login)
            user.type = "User"
            reset = epoch(self.now()) + self.rate_window_seconds
            state = TokenState(
                token=token,
                login=user.login,
                user_id=user.id,
                limit=rate_limit,
                remaining=rate_limit,
                reset=reset,
                graphql_limit=graphql_rate_limit,
                graphql_remaining=graphql_rate_limit,
                graphql_reset=reset,
            )
            self._tokens[token] = state
            return copy.copy(state)

    def revoke_token(self, token: str) -> None:
        with self.lock:
            self._tokens[token].revoked = True

    def set_rate_limit(
        self,
        token: str,
        remaining: int,
        reset_at: datetime | int | None = None,
        limit: int | None = None,
    ) -> TokenState:
        """Set the token's primary-limit window. ``reset_at``: aware datetime or epoch seconds."""
        with self.lock:
            state = self._tokens[token]
            if limit is not None:
                state.limit = limit
            state.remaining = max(0, min(remaining, state.limit))
            state.reset = self._reset_epoch(reset_at)
            state.window += 1
            return copy.copy(state)

    def set_graphql_rate_limit(
        self,
        token: str,
        remaining: int,
        reset_at: datetime | int | None = None,
        limit: int | None = None,
    ) -> TokenState:
        """Set the token's GraphQL budget (points), like ``set_rate_limit`` does for REST."""
        with self.lock:
            state = self._tokens[token]
            if limit is not None:
                state.graphql_limit = limit
            state.graphql_remaining = max(0, min(remaining, state.graphql_limit))
            state.graphql_reset = self._reset_epoch(reset_at)
            return copy.copy(state)

    def _reset_epoch(self, reset_at: datetime | int | None) -> int:
        """A window's reset time in epoch seconds: given, or a full window from now."""
        if reset_at is None:
            return epoch(self.now()) + self.rate_window_seconds
        if isinstance(reset_at, datetime):
            return epoch(to_utc(reset_at))
        return int(reset_at)

    def token_state(self, token: str | None) -> TokenState | None:
        """The live state of a valid token (windows refilled if due) or None."""
        with self.lock:
            state = self._tokens.get(token) if token else None
            if state is None or state.revoked:
                return None
            now = epoch(self.now())
            if now >= state.reset:
                state.remaining = state.limit
                state.reset = now + self.rate_window_seconds
                state.window += 1
            if now >= state.graphql_reset:
                state.graphql_remaining = state.graphql_limit
                state.graphql_reset = now + self.rate_window_seconds
            return state

    # ------------------------------------------------------------------ repositories

    def add_repo(
        self,
        full_name: str,
        private: bool = False,
        default_branch: str = "main",
        description: str | None = None,
    ) -> RepoRecord:
        owner, sep, name = full_name.partition("/")
        if not sep or not owner or not name or "/" in name:
            raise ValueError(f"expected 'owner/name', got {full_name!r}")
        with self.lock:
            if full_name.lower() in self._repos:
                raise ValueError(f"repository {full_name!r} already exists")
            self._user(owner, type_="Organization")
            now = self.now()
            record = RepoRecord(
                id=next(self._repo_ids),
                owner=owner,
                name=name,
                private=private,
                default_branch=default_branch,
                description=description,
                created_at=now - timedelta(days=365),
                updated_at=now,
            )
            self._repos[full_name.lower()] = _RepoState(record=record)
            return copy.copy(record)

    def find_repo(self, owner: str, name: str) -> _RepoState | None:
        """Case-insensitive lookup (caller should hold the lock while using the result)."""
        return self._repos.get(f"{owner}/{name}".lower())

    def _repo_state(self, full_name: str, create: bool = False) -> _RepoState:
        state = self._repos.get(full_name.lower())
        if state is None:
            if not create:
                raise KeyError(f"unknown repository {full_name!r}")
            self.add_repo(full_name)
            state = self._repos[full_name.lower()]
        return state

    # ------------------------------------------------------------------ issues & pulls

    def add_pull(self, repo: str, **fields: Any) -> ItemRecord:
        """Add a pull request (unknown repositories are created on the fly)."""
        with self.lock:
            return copy.copy(self._add_item(repo, True, fields))

    def add_issue(self, repo: str, **fields: Any) -> ItemRecord:
        """Add a plain issue (unknown repositories are created on the fly)."""
        with self.lock:
            return copy.copy(self._add_item(repo, False, fields))

    def generate_pulls(
        self,
        repo: str,
        count: int,
        start: datetime | None = None,
        step: timedelta = timedelta(minutes=5),
        **common_fields: Any,
    ) -> list[ItemRecord]:
        """Bulk-add ``count`` PRs created (and updated) at ``start + i * step``.

        ``start`` defaults to ``now() - count * step``. Other keyword args apply to every PR.
        """
        return self._generate(repo, True, count, start, step, common_fields)

    def generate_issues(
        self,
        repo: str,
        count: int,
        start: datetime | None = None,
        step: timedelta = timedelta(minutes=5),
        **common_fields: Any,
    ) -> list[ItemRecord]:
        """Bulk-add ``count`` plain issues, like ``generate_pulls``."""
        return self._generate(repo, False, count, start, step, common_fields)

    def _generate(
        self,
        repo: str,
        is_pull: bool,
        count: int,
        start: datetime | None,
        step: timedelta,
        common: dict[str, Any],
    ) -> list[ItemRecord]:
        with self.lock:
            base = to_utc(start) if start is not None else self.now() - step * count
            out = []
            for i in range(count):
                fields = dict(common)
                fields.setdefault("created_at", base + step * i)
                out.append(copy.copy(self._add_item(repo, is_pull, fields)))
            return out

    def _add_item(self, repo: str, is_pull: bool, fields: dict[str, Any]) -> ItemRecord:
        unknown = set(fields) - EDITABLE_FIELDS
        if unknown:
            raise TypeError(f"unknown field(s): {sorted(unknown)}")
        state = self._repo_state(repo, create=True)
        number = state.next_number
        state.next_number += 1
        fields = {k: (to_utc(v) if k in _TIME_FIELDS else v) for k, v in fields.items()}
        created = fields.pop("created_at", None) or self.now()
        updated = fields.pop("updated_at", None) or created
        author = fields.pop("author", DEFAULT_AUTHOR)
        if author is not None:
            self._user(author)
        issue_id = next(self._issue_ids)
        full_name = state.record.full_name
        item = ItemRecord(
            repo=full_name,
            number=number,
            is_pull=is_pull,
            id=next(self._pull_ids) if is_pull else issue_id,
            issue_id=issue_id,
            title=fields.pop("title", None)
            or (f"Pull request #{number}" if is_pull else f"Issue #{number}"),
            author=author,
            state="open",
            created_at=created,
            updated_at=updated,
            head_ref=f"feature-{number}",
            head_sha=_sha(full_name, number, "head"),
            base_sha=_sha(full_name, number, "base"),
        )
        state_given = "state" in fields
        requested_state = fields.pop("state", "open")
        self._apply(item, fields, requested_state, state_given)
        state.items[number] = item
        state.sorted_cache.clear()
        self._item_changed(state, item, "opened")
        return item

    def update(
        self, repo: str, number: int, updated_at: datetime | None = None, **fields: Any
    ) -> ItemRecord:
        """Change any field of an issue/PR; ``updated_at`` defaults to ``now()``.

        State changes keep GitHub's invariants: closing sets ``closed_at`` (to ``merged_at`` or
        ``updated_at``) unless given, ``state="merged"`` or a ``merged_at`` closes the PR, and
        reopening clears ``closed_at``/``merged_at``.
        """
        unknown = set(fields) - EDITABLE_FIELDS
        if unknown:
            raise TypeError(f"unknown field(s): {sorted(unknown)}")
        with self.lock:
            state = self._repo_state(repo)
            item = state.items.get(number)
            if item is None:
                raise KeyError(f"{repo}#{number} does not exist")
            fields = {k: (to_utc(v) if k in _TIME_FIELDS else v) for k, v in fields.items()}
            item.updated_at = to_utc(updated_at) if updated_at is not None else self.now()
            if "created_at" in fields:
                item.created_at = fields.pop("created_at")
            if fields.get("author") is not None:
                self._user(fields["author"])
            state_given = "state" in fields
            requested_state = fields.pop("state", item.state)
            before = copy.copy(item)
            self._apply(item, fields, requested_state, state_given)
            state.sorted_cache.clear()
            self._item_changed(state, item, _action(before, item))
            return copy.copy(item)

    def rename_repo(self, full_name: str, new_name: str) -> RepoRecord:
        """Rename a repository within its owner (its id, items and hooks stay)."""
        with self.lock:
            state = self._repo_state(full_name)
            old_name = state.record.name
            new_full_name = f"{state.record.owner}/{new_name}"
            if new_full_name.lower() in self._repos and new_full_name.lower() != full_name.lower():
                raise ValueError(f"repository {new_full_name!r} already exists")
            del self._repos[full_name.lower()]
            state.record.name = new_name
            state.record.updated_at = self.now()
            self._repos[new_full_name.lower()] = state
            for item in state.items.values():
                item.repo = new_full_name
            self._repo_renamed(state, old_name)
            return copy.copy(state.record)

    def _item_changed(self, state: _RepoState, item: ItemRecord, action: str) -> None:
        """Called (lock held) after an issue or PR was added or changed; the emulator sends
        webhook deliveries from here."""

    def _repo_renamed(self, state: _RepoState, old_name: str) -> None:
        """Called (lock held) after a repository was renamed."""

    @staticmethod
    def _apply(item: ItemRecord, fields: dict[str, Any], requested: str, state_given: bool) -> None:
        if requested not in ("open", "closed", "merged"):
            raise ValueError(f"state must be open, closed or merged, got {requested!r}")
        was_open = item.state == "open"
        for key, value in fields.items():
            if key == "labels":
                value = tuple(value)
            setattr(item, key, value)
        if requested == "merged":
            if not item.is_pull:
                raise ValueError("only pull requests can be merged")
            item.merged_at = item.merged_at or item.updated_at
            requested = "closed"
        elif item.merged_at is not None and not (state_given and requested == "open"):
            requested = "closed"
        if requested == "open":
            if "closed_at" not in fields:
                item.closed_at = None
            if "merged_at" not in fields:
                item.merged_at = None
        elif item.closed_at is None or (was_open and "closed_at" not in fields):
            item.closed_at = item.merged_at or item.updated_at
        if item.merged_at is not None and item.merge_commit_sha is None:
            item.merge_commit_sha = _sha(item.repo, item.number, "merge")
        item.state = requested

    def get(self, repo: str, number: int) -> ItemRecord:
        """A snapshot of the current issue/PR record."""
        with self.lock:
            item = self._repo_state(repo).items.get(number)
            if item is None:
                raise KeyError(f"{repo}#{number} does not exist")
            return copy.copy(item)

    def get_repo(self, full_name: str) -> RepoRecord:
        with self.lock:
            return copy.copy(self._repo_state(full_name).record)

    def items(self, repo: str) -> list[ItemRecord]:
        """Snapshots of all issues and PRs of a repository, by number."""
        with self.lock:
            state = self._repo_state(repo)
            return [copy.copy(state.items[n]) for n in sorted(state.items)]

    # ------------------------------------------------------------------ listing

    @staticmethod
    def sorted_items(
        state: _RepoState, kind: str, item_state: str, sort: str, direction: str
    ) -> list[ItemRecord]:
        """Items of a repo filtered by kind ("issues" or "pulls") and state, sorted.

        Ties on the sort key are broken by number in the same direction. Cached per repo until
        the next mutation. Caller holds the lock.
        """
        key = (kind, item_state, sort, direction)
        cached = state.sorted_cache.get(key)
        if cached is not None:
            return cached
        values: Iterable[ItemRecord] = state.items.values()
        if kind == "pulls":
            values = (i for i in values if i.is_pull)
        if item_state != "all":
            values = (i for i in values if i.state == item_state)
        if sort == "updated":

            def sort_key(i: ItemRecord) -> tuple[Any, int]:
                return (i.updated_at, i.number)
        elif sort in ("comments", "popularity"):

            def sort_key(i: ItemRecord) -> tuple[Any, int]:
                return (i.comments, i.number)
        else:  # created, long-running

            def sort_key(i: ItemRecord) -> tuple[Any, int]:
                return (i.created_at, i.number)

        result = sorted(values, key=sort_key, reverse=direction == "desc")
        state.sorted_cache[key] = result
        return result


def _action(before: ItemRecord, after: ItemRecord) -> str:
    """The ``pull_request`` webhook action GitHub would report for this change."""
    if before.state != after.state:
        return "closed" if after.state == "closed" else "reopened"
    if before.draft != after.draft:
        return "converted_to_draft" if after.draft else "ready_for_review"
    if before.head_sha != after.head_sha:
        return "synchronize"
    if set(after.labels) - set(before.labels):
        return "labeled"
    if set(before.labels) - set(after.labels):
        return "unlabeled"
    return "edited"
