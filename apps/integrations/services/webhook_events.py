"""Applying GitHub webhook deliveries: ``pull_request`` and ``repository`` events.

A delivery is applied, and its ``X-GitHub-Delivery`` GUID recorded, in one transaction: a
crash in between leaves neither, so GitHub's redelivery (or the recovery job's) applies it
then; a delivery that was applied is never applied twice. The GUID is recorded last, with
``INSERT ... ON CONFLICT (guid) DO NOTHING``: a replay inserts nothing and its transaction is
rolled back, work included. Two workers handed the same GUID at once cannot both apply it
either: on PostgreSQL the second insert waits on the unique index for the first transaction
and then inserts nothing; SQLite runs write transactions one at a time.

What each event does (every team that tracks the repository gets it):

- ``pull_request``, every action: the payload's ``pull_request`` is the REST PR object, upserted
  through ``pull_requests_upsert``, the sync's own write with its rule that an older
  ``updated_at`` changes nothing (GitHub does not order deliveries). Only repositories that
  can sync (active, integration connected; ``TrackedRepository.objects.syncable``) are
  written: an inactive repository is one nobody wants updated, and a disconnected team took
  back its consent.
- ``repository`` ``renamed`` / ``transferred``: ``full_name`` becomes the payload's.
  ``archived`` / ``deleted``: the repository is made inactive with ``inactive_reason``
  saying why (shown in the admin). ``unarchived``: a repository that ``archived`` made
  inactive is active again (one an admin deactivated stays as it is); nothing changed while
  it was archived (GitHub makes it read-only), so the next sync finds its watermark true.

A delivery for a repository nobody tracks (or none can sync) records nothing and creates
nothing. Webhooks never touch the sync's watermark, checkpoint or status: the sync stays the
source of truth and repairs anything a lost delivery missed.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.integrations.models import TrackedRepository, WebhookDelivery
from apps.integrations.services.pull_requests import PullRequestData, pull_requests_upsert

logger = logging.getLogger(__name__)

# GitHub does not deliver payloads larger than this.
# https://docs.github.com/en/webhooks/webhook-events-and-payloads#payload-cap
MAX_PAYLOAD_BYTES = 25 * 1024 * 1024

REASON_ARCHIVED = "archived on GitHub"
REASON_DELETED = "deleted on GitHub"


class Outcome(StrEnum):
    APPLIED = "applied"  # a PR row written for at least one team
    STALE = "stale"  # every team already holds this PR at least as new
    RENAMED = "renamed"
    DEACTIVATED = "deactivated"
    REACTIVATED = "reactivated"
    UNCHANGED = "unchanged"  # a repository event that found nothing to change
    DUPLICATE = "duplicate"  # this GUID was applied before
    UNTRACKED = "untracked"  # no team tracks (or can sync) the repository
    IGNORED = "ignored"  # an event or action the product does not use


@dataclass(frozen=True, slots=True)
class Delivery:
    """One delivery as the receiver got it (signature already checked)."""

    guid: str
    event: str
    payload: Mapping[str, Any]

    @property
    def action(self) -> str:
        return str(self.payload.get("action") or "")


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    outcome: Outcome
    repositories: int = 0  # tracked-repository rows the delivery was applied to


class WebhookPayloadError(ValueError):
    """A signed payload that lacks what its event needs (names the missing field)."""


_REPOSITORY_ACTIONS = frozenset({"renamed", "transferred", "archived", "unarchived", "deleted"})


def webhook_event_is_handled(*, event: str, action: str) -> bool:
    """Whether ``event``/``action`` changes anything here; the rest are acknowledged (202)
    without a database query."""
    if event == "pull_request":
        return True
    return event == "repository" and action in _REPOSITORY_ACTIONS


def webhook_delivery_apply(*, delivery: Delivery) -> DeliveryResult:
    """Apply ``delivery`` and record its GUID, both or neither.

    Raises ``WebhookPayloadError`` for a payload its event cannot use (nothing is written),
    and Django's ``DatabaseError`` family when the database fails.
    """
    if not webhook_event_is_handled(event=delivery.event, action=delivery.action):
        return DeliveryResult(Outcome.IGNORED)
    repo_id = _repository_id(delivery.payload)
    apply = _pull_request_apply if delivery.event == "pull_request" else _repository_apply
    prepared = apply(delivery, repo_id)
    if isinstance(prepared, DeliveryResult):
        return prepared
    try:
        with _sqlite_writer(), transaction.atomic():
            result = prepared()
            if result.outcome is Outcome.UNTRACKED:
                return result
            if not _delivery_record(delivery, repo_id=repo_id, outcome=result.outcome):
                raise _AlreadyApplied
    except _AlreadyApplied:
        logger.debug("webhook.duplicate", extra={"guid": delivery.guid})
        return DeliveryResult(Outcome.DUPLICATE)
    return result


# SQLite has one writer at a time. Threads of one process that meet its lock wait in
# SQLite's busy handler, which sleeps 1 ms, 2 ms, 5 ms ... up to 100 ms between tries: under
# a burst of deliveries most of the time went to those sleeps. Queued on a lock of our own,
# a thread starts the moment the one before it commits.
_SQLITE_WRITE_LOCK = threading.Lock()


def _sqlite_writer() -> contextlib.AbstractContextManager[object]:
    if transaction.get_connection().vendor == "sqlite":
        return _SQLITE_WRITE_LOCK
    return contextlib.nullcontext()


class _AlreadyApplied(Exception):
    """Rolls back the work of a delivery whose GUID is already recorded."""


def _repository_id(payload: Mapping[str, Any]) -> int:
    try:
        return int(payload["repository"]["id"])
    except (KeyError, TypeError, ValueError):
        raise WebhookPayloadError("the payload has no repository.id") from None


def _delivery_record(delivery: Delivery, *, repo_id: int, outcome: Outcome) -> bool:
    """Insert the GUID unless present; whether it was inserted. No exception on a conflict,
    so the transaction stays usable on PostgreSQL and the caller decides to roll back."""
    conn = transaction.get_connection()
    meta = WebhookDelivery._meta
    qn = conn.ops.quote_name
    names = ["guid", "event", "action", "github_repo_id", "outcome", "received_at"]
    columns = ", ".join(qn(meta.get_field(name).column) for name in names)
    sql = (
        f"INSERT INTO {qn(meta.db_table)} ({columns}) VALUES (%s, %s, %s, %s, %s, %s) "  # noqa: S608
        f"ON CONFLICT ({qn(meta.get_field('guid').column)}) DO NOTHING"
    )
    params = [
        delivery.guid,
        delivery.event[:64],
        delivery.action[:64],
        repo_id,
        str(outcome),
        conn.ops.adapt_datetimefield_value(timezone.now()),
    ]
    with conn.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount == 1


def _pull_request_apply(
    delivery: Delivery, repo_id: int
) -> DeliveryResult | Callable[[], DeliveryResult]:
    try:
        pull_request = PullRequestData.from_rest(delivery.payload["pull_request"])
    except (KeyError, TypeError, ValueError, AttributeError):
        raise WebhookPayloadError("the payload has no readable pull_request") from None
    # Read before the write transaction, which on SQLite holds the database's one write lock
    # from its first statement: the receiver's throughput is how briefly it holds it. A
    # repository untracked in between fails the insert's foreign key: a 500 that GitHub's
    # redelivery turns into "untracked".
    repos = _syncable_repositories(repo_id)
    if not repos:
        return DeliveryResult(Outcome.UNTRACKED)

    def run() -> DeliveryResult:
        # The repository rows first, then the PR rows: the order a sync's page write takes
        # them (its lease fence updates the repository row), so the two never deadlock.
        _delivered([repo.pk for repo in repos])
        written = sum(
            pull_requests_upsert(tracked_repo=repo, pull_requests=[pull_request]) for repo in repos
        )
        outcome = Outcome.APPLIED if written else Outcome.STALE
        logger.debug(
            "webhook.pull_request",
            extra={
                "guid": delivery.guid,
                "action": delivery.action,
                "repo_id": repo_id,
                "number": pull_request.number,
                "outcome": str(outcome),
            },
        )
        return DeliveryResult(outcome, repositories=len(repos))

    return run


_SENTINEL_REPO_ID = -7_700_000_001


@functools.cache
def _syncable_repositories_sql(vendor: str) -> tuple[str, tuple[Any, ...], int]:
    """``TrackedRepository.objects.syncable()`` for one GitHub id, compiled once per backend
    (building the query took longer than running it). Returns the SQL, its parameters and
    the index of the repository id among them."""
    query = (
        TrackedRepository.objects.syncable()
        .filter(github_repo_id=_SENTINEL_REPO_ID)
        .order_by("pk")
        .values_list("pk", "team_id")
        .query
    )
    sql, params = query.sql_with_params()
    return sql, tuple(params), params.index(_SENTINEL_REPO_ID)


def _syncable_repositories(repo_id: int) -> list[TrackedRepository]:
    conn = transaction.get_connection()
    sql, params, index = _syncable_repositories_sql(conn.vendor)
    bound = list(params)
    bound[index] = repo_id
    with conn.cursor() as cursor:
        cursor.execute(sql, bound)
        rows = cursor.fetchall()
    return [_repository_ref(pk, team_id) for pk, team_id in rows]


@functools.lru_cache(maxsize=4096)
def _repository_ref(pk: int, team_id: int) -> TrackedRepository:
    """A TrackedRepository carrying only what the upsert reads (its id and team); built once
    per pair, as making a model instance of its ~30 fields cost a fifth of a delivery's CPU.
    Never saved or changed: the row's other columns are not loaded."""
    return TrackedRepository(pk=pk, team_id=team_id)


def _repository_apply(delivery: Delivery, repo_id: int) -> Callable[[], DeliveryResult]:
    action = delivery.action
    full_name = delivery.payload["repository"].get("full_name")
    if action in {"renamed", "transferred"} and not (
        isinstance(full_name, str) and "/" in full_name
    ):
        raise WebhookPayloadError("the payload has no repository.full_name")

    def run() -> DeliveryResult:
        rows = TrackedRepository.objects.filter(github_repo_id=repo_id)
        ids = list(rows.order_by("pk").values_list("pk", flat=True))
        if not ids:
            return DeliveryResult(Outcome.UNTRACKED)
        if action in {"renamed", "transferred"}:
            changed = _rename(ids, full_name)
            outcome = Outcome.RENAMED if changed else Outcome.UNCHANGED
        elif action in {"archived", "deleted"}:
            reason = REASON_ARCHIVED if action == "archived" else REASON_DELETED
            # Archiving deactivates only active rows: an admin's deactivation keeps its own
            # (empty) reason, so unarchiving will not reactivate it. Deletion is final and
            # says so on every row.
            targets = rows if action == "deleted" else rows.filter(is_active=True)
            changed = targets.update(
                is_active=False, inactive_reason=reason, updated_at=timezone.now()
            )
            outcome = Outcome.DEACTIVATED if changed else Outcome.UNCHANGED
        else:  # unarchived
            changed = rows.filter(is_active=False, inactive_reason=REASON_ARCHIVED).update(
                is_active=True, inactive_reason="", updated_at=timezone.now()
            )
            outcome = Outcome.REACTIVATED if changed else Outcome.UNCHANGED
        _delivered(ids)
        logger.info(
            "webhook.repository",
            extra={
                "guid": delivery.guid,
                "action": action,
                "repo_id": repo_id,
                "full_name": full_name,
                "rows_changed": changed,
            },
        )
        return DeliveryResult(outcome, repositories=len(ids))

    return run


def _rename(ids: list[int], full_name: str) -> int:
    """Set ``full_name`` on each row; a row whose team already tracks another repository
    under that name keeps its old one (logged): the unique name per team must hold, and
    the other row is not ours to change."""
    changed = 0
    for pk in ids:
        try:
            with transaction.atomic():
                changed += (
                    TrackedRepository.objects.filter(pk=pk)
                    .exclude(full_name=full_name)
                    .update(full_name=full_name, updated_at=timezone.now())
                )
        except IntegrityError:
            logger.warning(
                "webhook.rename_conflict", extra={"tracked_repo_id": pk, "full_name": full_name}
            )
    return changed


# How stale ``webhook_last_delivery_at`` may be. Writing it on every delivery made every
# delivery of a repository queue on that repository's row lock (PostgreSQL); written at
# most once a minute, the row is locked once a minute and deliveries run side by side.
LAST_DELIVERY_RESOLUTION = timedelta(minutes=1)


def _delivered(ids: list[int]) -> None:
    """Note that a delivery for the repositories ``ids`` was accepted now (to the minute).

    A row whose value is recent is not matched, so not locked: PostgreSQL evaluates the
    condition on the committed row version and skips it without waiting."""
    conn = transaction.get_connection()
    meta = TrackedRepository._meta
    qn = conn.ops.quote_name
    column = qn(meta.get_field("webhook_last_delivery_at").column)
    placeholders = ", ".join(["%s"] * len(ids))
    pk = qn(meta.pk.column)
    sql = (
        f"UPDATE {qn(meta.db_table)} SET {column} = %s WHERE {pk} IN ({placeholders})"  # noqa: S608
        f" AND ({column} IS NULL OR {column} < %s)"
    )
    now = timezone.now()
    adapt = conn.ops.adapt_datetimefield_value
    with conn.cursor() as cursor:
        cursor.execute(sql, [adapt(now), *ids, adapt(now - LAST_DELIVERY_RESOLUTION)])


def webhook_deliveries_prune(*, older_than: datetime, batch_size: int = 5_000) -> int:
    """Delete delivery records received before ``older_than``, ``batch_size`` at a time (a
    short write lock each: the receiver keeps writing meanwhile). Returns how many."""
    deleted = 0
    while True:
        batch = list(
            WebhookDelivery.objects.filter(received_at__lt=older_than)
            .order_by("received_at")
            .values_list("pk", flat=True)[:batch_size]
        )
        if not batch:
            return deleted
        deleted += WebhookDelivery.objects.filter(pk__in=batch).delete()[0]
