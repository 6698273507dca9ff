"""Writing pull requests: one batched upsert that never replaces newer data with older."""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from operator import attrgetter
from typing import Any

from django.db import connection, models, transaction
from django.utils import timezone

from apps.integrations.models import PullRequest, TrackedRepository
from apps.integrations.services.github_client import parse_github_time


@dataclass(frozen=True, slots=True)
class PullRequestData:
    """A pull request as GitHub describes it, independent of which API answered."""

    github_id: int
    number: int
    title: str
    state: str
    is_draft: bool
    author_login: str
    github_created_at: datetime
    github_updated_at: datetime
    closed_at: datetime | None
    merged_at: datetime | None
    additions: int
    deletions: int
    changed_files: int
    commits: int
    base_ref: str
    head_ref: str
    html_url: str

    @classmethod
    def from_rest(cls, data: dict[str, Any]) -> PullRequestData:
        """From the REST "get a pull request" JSON."""
        user = data.get("user") or {}
        return cls(
            github_id=int(data["id"]),
            number=int(data["number"]),
            title=data.get("title") or "",
            state=str(data["state"]).lower(),
            is_draft=bool(data.get("draft")),
            # GitHub shows deleted accounts as "ghost"; some payloads carry user: null.
            author_login=user.get("login") or "ghost",
            github_created_at=parse_github_time(data["created_at"]),
            github_updated_at=parse_github_time(data["updated_at"]),
            closed_at=parse_github_time(data.get("closed_at")),
            merged_at=parse_github_time(data.get("merged_at")),
            additions=int(data.get("additions") or 0),
            deletions=int(data.get("deletions") or 0),
            changed_files=int(data.get("changed_files") or 0),
            commits=int(data.get("commits") or 0),
            base_ref=(data.get("base") or {}).get("ref") or "",
            head_ref=(data.get("head") or {}).get("ref") or "",
            html_url=data.get("html_url") or "",
        )

    @classmethod
    def from_graphql(cls, node: dict[str, Any]) -> PullRequestData:
        """From the GraphQL ``PullRequest`` fields of ``github_client.get_pulls_details``.

        GraphQL says MERGED where REST says closed; ``state`` keeps REST's open/closed.
        """
        author = node.get("author") or {}
        return cls(
            github_id=int(node["databaseId"]),
            number=int(node["number"]),
            title=node.get("title") or "",
            state="open" if str(node["state"]).upper() == "OPEN" else "closed",
            is_draft=bool(node.get("isDraft")),
            author_login=author.get("login") or "ghost",
            github_created_at=parse_github_time(node["createdAt"]),
            github_updated_at=parse_github_time(node["updatedAt"]),
            closed_at=parse_github_time(node.get("closedAt")),
            merged_at=parse_github_time(node.get("mergedAt")),
            additions=int(node.get("additions") or 0),
            deletions=int(node.get("deletions") or 0),
            changed_files=int(node.get("changedFiles") or 0),
            commits=int((node.get("commits") or {}).get("totalCount") or 0),
            base_ref=node.get("baseRefName") or "",
            head_ref=node.get("headRefName") or "",
            html_url=node.get("url") or "",
        )


_DATA_FIELDS = [f for f in PullRequestData.__dataclass_fields__]
_DATETIME_INDEXES = [
    i
    for i, name in enumerate(_DATA_FIELDS)
    if isinstance(PullRequest._meta.get_field(name), models.DateTimeField)
]
_INSERT_FIELDS = ["team", "tracked_repo", *_DATA_FIELDS, "created_at", "updated_at"]
# On conflict every GitHub field and the row's updated_at change; team, tracked_repo and the
# row's created_at keep what the first insert wrote.
_UPDATE_FIELDS = [*_DATA_FIELDS, "updated_at"]


def _max_rows_per_statement(columns: int) -> int:
    if connection.vendor == "sqlite":
        # SQLite >= 3.32 allows 32,766 bound variables per statement (999 before).
        limit = 32_766 if sqlite3.sqlite_version_info >= (3, 32) else 999
    else:
        limit = 65_535  # PostgreSQL's bind-parameter limit
    return max(1, min(500, limit // columns))


@functools.lru_cache(maxsize=32)
def _upsert_sql(rows: int, vendor: str) -> str:
    """The statement for ``rows`` rows on ``vendor``'s backend, built once: quoting its ~20
    columns cost more than running it when a webhook delivery writes one row."""
    meta = PullRequest._meta
    qn = connection.ops.quote_name
    table = qn(meta.db_table)
    columns = [qn(meta.get_field(name).column) for name in _INSERT_FIELDS]
    placeholders = "(" + ", ".join(["%s"] * len(columns)) + ")"
    updates = ", ".join(
        f"{qn(meta.get_field(name).column)} = excluded.{qn(meta.get_field(name).column)}"
        for name in _UPDATE_FIELDS
    )
    updated_col = qn(meta.get_field("github_updated_at").column)
    conflict = ", ".join(qn(meta.get_field(name).column) for name in ("tracked_repo", "github_id"))
    # The WHERE makes ordering part of the write itself: a slower sync carrying an older
    # version of a PR cannot overwrite a newer one stored meanwhile by another sync, with no
    # read-then-write race. Equal timestamps do update, so a forced resync can repair a row.
    # Only identifiers from the model's metadata are interpolated; values are bound.
    values = ", ".join([placeholders] * rows)
    insert = f"INSERT INTO {table} ({', '.join(columns)}) VALUES {values}"  # noqa: S608
    return (
        f"{insert} ON CONFLICT ({conflict}) DO UPDATE SET {updates}"
        f" WHERE {table}.{updated_col} <= excluded.{updated_col}"
    )


def pull_requests_upsert(
    *, tracked_repo: TrackedRepository, pull_requests: Iterable[PullRequestData]
) -> int:
    """Insert or update pull requests of ``tracked_repo`` in batched statements.

    Returns how many rows were inserted or changed (rows skipped because the stored copy is
    newer do not count).
    """
    conn = transaction.get_connection()
    per_statement = _max_rows_per_statement(len(_INSERT_FIELDS))
    # Values are adapted here rather than through each field's get_db_prep_save: that path
    # costs ~20 function calls per value and was 90% of the write time. Integers, strings
    # and booleans go to the driver as they are; only datetimes need the backend's adapter
    # (UTC text on SQLite, aware datetimes on PostgreSQL).
    adapt = conn.ops.adapt_datetimefield_value
    now = adapt(timezone.now())
    head = (tracked_repo.team_id, tracked_repo.pk)
    tail = (now, now)
    values_of = attrgetter(*_DATA_FIELDS)
    written = 0

    def flush(batch: list[PullRequestData]) -> None:
        nonlocal written
        params: list[Any] = []
        for pr in batch:
            values = list(values_of(pr))
            for index in _DATETIME_INDEXES:
                if values[index] is not None:
                    values[index] = adapt(values[index])
            params.extend(head)
            params.extend(values)
            params.extend(tail)
        with conn.cursor() as cursor:
            cursor.execute(_upsert_sql(len(batch), conn.vendor), params)
            written += max(cursor.rowcount, 0)

    # No savepoint: a caller inside a transaction (the sync's page, a webhook delivery) wants
    # all or nothing anyway, and a savepoint costs two more statements per call.
    with transaction.atomic(savepoint=False):
        batch: list[PullRequestData] = []
        for pr in pull_requests:
            batch.append(pr)
            if len(batch) >= per_statement:
                flush(batch)
                batch = []
        if batch:
            flush(batch)
    return written


def stored_updated_at(
    *, tracked_repo: TrackedRepository, numbers: Sequence[int]
) -> dict[int, datetime]:
    """``github_updated_at`` of the stored PRs among ``numbers``, in one query."""
    if not numbers:
        return {}
    return dict(
        PullRequest.objects.for_team(tracked_repo.team_id)
        .filter(tracked_repo=tracked_repo, number__in=list(numbers))
        .values_list("number", "github_updated_at")
    )
