"""Dramatiq actors: thin wrappers that take ids, call services, and turn "come back later"
into delayed messages.

Retry policy is configuration: GitHub's permanent answers are in ``throws`` (no retries),
transient ones go through the Retries middleware (5 retries, 15 s doubling, capped at 10 min,
so a persistent failure shows as ``error`` well within the hour). Rate limits are not failures:
the message is sent again, delayed until GitHub says to come back (``services.rate_limits``),
as a fresh message so the retry budget stays whole; the sync resumes from its checkpoint. No
worker thread ever sleeps waiting for a limit. Outcomes are recorded where they happen: the
sync job records syncing, idle and queued, the actor a deferral, and ``SyncOutcomeMiddleware``
the errors, once Retries has decided whether they are final. Actors return nothing.

New requests (the fan-out, the admin, the sweep) mark a repository ``queued`` only once its
message is in the queue, so a send that fails leaves none waiting for a message that does not
exist; the sweep (``sweep_stuck_repositories``) sends again what a lost message left behind.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import dramatiq
from django.conf import settings
from django.utils import timezone
from dramatiq.middleware import CurrentMessage

from apps.integrations.broker import UNAVAILABLE, chunks, enqueue_many
from apps.integrations.models import TrackedRepository
from apps.integrations.services import (
    rate_budget,
    rate_limits,
    sync_outcome,
    sync_sweep,
    webhook_events,
)
from apps.integrations.services.github_client import (
    GitHubForbidden,
    GitHubNotConnected,
    GitHubNotFound,
    GitHubPrimaryRateLimit,
    GitHubRateLimited,
    GitHubRequestError,
    GitHubUnauthorized,
)
from apps.integrations.services.sync_jobs import repository_sync_job

logger = logging.getLogger(__name__)

QUEUE = "github_sync"
# Syncs an operator asked for ("sync now" in the admin, ``sync_repo --enqueue``): their own
# queue and a higher priority, so they do not wait behind a daily fan-out of thousands.
# Dramatiq's worker runs one consumer per queue, each holding at most its own prefetch (2 x
# threads) of unacked messages, and feeds them all into one priority queue that the worker
# threads take from, lowest ``priority`` first. The fan-out's backlog stays in Redis behind
# its consumer's prefetch, and the interactive consumer fetches its message at once; the
# next thread to finish its message takes it ahead of every prefetched bulk one. So its wait
# is bounded by a thread finishing its current slice (at most
# SYNC_MESSAGE_TIME_BUDGET_SECONDS, usually well under a second for an incremental sync),
# not by the backlog. A priority on one shared queue would not do: a message at the tail of
# a Redis list is not fetched until the thousands before it are.
INTERACTIVE_QUEUE = "github_sync_interactive"
INTERACTIVE_PRIORITY = 0
BULK_PRIORITY = 10
# The sweep's own queue: behind a fan-out's thousands of sync messages its message would
# wait, and expire, exactly when statuses are most likely to be stale.
SWEEP_QUEUE = "github_sync_sweep"
# GitHub answers that retrying cannot change.
PERMANENT_ERRORS = (
    GitHubUnauthorized,
    GitHubNotConnected,
    GitHubNotFound,
    GitHubForbidden,
    GitHubRequestError,
)
SYNC_ACTOR_OPTIONS: dict[str, Any] = {
    "max_retries": 5,
    "min_backoff": 15_000,
    "max_backoff": 600_000,
    "throws": PERMANENT_ERRORS,
    # Far above the per-message work budget (SYNC_MESSAGE_TIME_BUDGET_SECONDS), so it only
    # ever stops a sync that hangs.
    "time_limit": 20 * 60 * 1000,
    "records_sync_outcome": True,
}


@dramatiq.actor(queue_name=QUEUE, priority=BULK_PRIORITY, **SYNC_ACTOR_OPTIONS)
def sync_repository(
    tracked_repo_id: int,
    full: bool = False,
    secondary_limits: int = 0,
    request_id: str = "",
) -> None:
    """Sync one tracked repository (incremental, or full when never synced or ``full``), as
    bulk work: the daily fan-out, the sweep. It leaves the token's reserve untouched.

    ``request_id`` names the request a continuation or deferral carries on (by default this
    message's id, which retries and redeliveries keep): a full pass it started resumes from
    its checkpoint instead of starting over.
    """
    _sync(sync_repository, tracked_repo_id, full, secondary_limits, request_id)


@dramatiq.actor(queue_name=INTERACTIVE_QUEUE, priority=INTERACTIVE_PRIORITY, **SYNC_ACTOR_OPTIONS)
def sync_repository_now(
    tracked_repo_id: int,
    full: bool = False,
    secondary_limits: int = 0,
    request_id: str = "",
) -> None:
    """``sync_repository`` for a sync an operator asked for: ahead of bulk work (see
    ``INTERACTIVE_QUEUE``), allowed to spend the token's reserve; its continuations and
    deferrals stay interactive."""
    _sync(sync_repository_now, tracked_repo_id, full, secondary_limits, request_id)


def _sync(
    actor: dramatiq.Actor,
    tracked_repo_id: int,
    full: bool,
    secondary_limits: int,
    request_id: str,
) -> None:
    """The body of both sync actors; what comes next (a deferral, a continuation, a wait)
    is sent to ``actor`` again, so a request keeps its kind."""
    interactive = actor is sync_repository_now
    message = CurrentMessage.get_current_message()
    request_id = request_id or (message.message_id if message else "")
    try:
        outcome = repository_sync_job(
            tracked_repo_id=tracked_repo_id,
            requested_at=_requested_at(message),
            request_id=request_id,
            full=full,
            time_budget=settings.SYNC_MESSAGE_TIME_BUDGET_SECONDS,
            interactive=interactive,
        )
    except GitHubRateLimited as limit:
        # Bulk messages deferred to one reset are spread over the windows after it; an
        # interactive one comes back at the reset, where its floor of 0 finds budget.
        ticket = (
            rate_budget.take_ticket(limit)
            if isinstance(limit, GitHubPrimaryRateLimit) and not interactive
            else None
        )
        deferral = rate_limits.deferral_for(limit, secondary_limits=secondary_limits, ticket=ticket)
        # Recorded before the message exists, so it can never overwrite what the deferred
        # message records when it runs.
        sync_outcome.repository_sync_rate_limited(
            tracked_repo_id=tracked_repo_id, retry_at=deferral.retry_at
        )
        actor.send_with_options(
            args=(tracked_repo_id,),
            # The same request: a full pass it started resumes, one it did not start yet
            # still runs in full.
            kwargs={
                "full": full,
                "request_id": request_id,
                "secondary_limits": deferral.secondary_limits,
            },
            delay=deferral.delay_ms(),
        )
        return

    if outcome.action == "continue":
        # A large backfill: this message did its share; the next one resumes the saved pass
        # (never "full" again: should another sync finish the pass meanwhile, that would
        # start it over).
        actor.send_with_options(args=(tracked_repo_id,), kwargs={"request_id": request_id})
    elif outcome.action == "wait":
        # Another sync started before this request (it may have listed past changes made
        # after the request), or this request's own sync stalled elsewhere: run once that
        # lease ends, as the same request.
        wait = (outcome.wait_until or datetime.now(UTC)) - datetime.now(UTC)
        spread = timedelta(seconds=random.uniform(1, 5))  # noqa: S311
        actor.send_with_options(
            args=(tracked_repo_id,),
            kwargs={"full": full, "request_id": request_id},
            delay=_millis(max(wait, timedelta(0)) + spread),
        )


def _requested_at(message: dramatiq.Message | None) -> datetime | None:
    """When the message was sent, rounded up: the timestamp is truncated to the
    millisecond, and a lease taken within that millisecond must count as "not after"."""
    if message is None:
        return None
    return datetime.fromtimestamp((message.message_timestamp + 1) / 1000, tz=UTC)


def _millis(delta: timedelta) -> int:
    return max(int(delta.total_seconds() * 1000), 0)


class EnqueueFailed(Exception):
    """The task queue could not take the sync messages: ``enqueued`` of ``total`` made it
    (those repositories show ``queued``), the others are as they were."""

    def __init__(self, *, enqueued: int, total: int, error: Exception) -> None:
        super().__init__(
            f"the task queue failed after {enqueued} of {total} sync messages: "
            f"{type(error).__name__}: {error}"
        )
        self.enqueued = enqueued
        self.total = total


@dramatiq.actor(queue_name=QUEUE, max_retries=3)
def sync_all_repositories() -> None:
    """The daily fan-out (see ``enqueue_all_repository_syncs``). A retry or redelivery of
    this message counts from when it was first sent, so it sends only what the attempt that
    failed did not."""
    message = CurrentMessage.get_current_message()
    first_sent = (
        datetime.fromtimestamp(message.message_timestamp / 1000, tz=UTC) if message else None
    )
    enqueue_all_repository_syncs(requested_at=first_sent)


def enqueue_all_repository_syncs(*, requested_at: datetime | None = None) -> int:
    """One ``sync_repository`` message per syncable repository, each marked ``queued`` once
    its message is in the queue. Returns how many were enqueued; raises ``EnqueueFailed``.

    ``requested_at`` is when the fan-out was asked for (default: now). A repository with a
    message enqueued since then (by an earlier attempt of this fan-out, the admin or the
    sweep) is skipped: that message's sync starts after the request. The others have the
    request noted first, so those a failed fan-out did not send are sent by its retry or, if
    that is lost too (Redis still down when Retries re-enqueues it), by the sweep.
    """
    requested_at = requested_at or timezone.now()
    syncable = TrackedRepository.objects.syncable()
    sync_outcome.repository_syncs_requested(repos=syncable, requested_at=requested_at)
    ids = list(
        syncable.filter(sync_requested_at__isnull=False).order_by("pk").values_list("pk", flat=True)
    )
    count = _enqueue_syncs(ids)
    logger.info("repo_sync.fanout", extra={"count": count})
    return count


def enqueue_repository_syncs(
    *, tracked_repo_ids: Iterable[int], full: bool = False, interactive: bool = False
) -> int:
    """Send a sync message for each syncable one among ``tracked_repo_ids`` and mark it
    ``queued`` (the admin's actions, ``sync_repo --enqueue``). Returns how many; inactive and
    disconnected repositories are left as they are. Raises ``EnqueueFailed``.
    ``interactive``: an operator is waiting for these syncs (``sync_repository_now``: ahead
    of bulk work, and allowed to spend the token's reserve).

    Sent at once rather than on commit: the caller must learn that the queue is down, and a
    worker needs nothing this transaction writes (the rows existed before; ``queued`` is
    written after the send, and only where no worker got there first).
    """
    ids = list(
        TrackedRepository.objects.syncable()
        .filter(pk__in=list(tracked_repo_ids))
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    return _enqueue_syncs(ids, full=full, interactive=interactive)


@dramatiq.actor(queue_name=SWEEP_QUEUE, max_retries=0)
def sweep_stuck_repositories() -> None:
    """Every few minutes (``settings.SCHEDULED_TASKS``): send again the repositories whose
    status nothing will change any more (``services.sync_sweep``). No retries: the next run
    is minutes away."""
    _enqueue_syncs(sync_sweep.sweep_repositories().to_enqueue)


@dramatiq.actor(queue_name=SWEEP_QUEUE, max_retries=0)
def prune_webhook_deliveries() -> None:
    """Hourly (``settings.SCHEDULED_TASKS``): forget delivery GUIDs older than
    ``WEBHOOK_DELIVERY_RETENTION_DAYS``, past any redelivery GitHub still allows. On the
    sweep's queue, not behind a fan-out; no retries: the next run is an hour away."""
    cutoff = timezone.now() - timedelta(days=settings.WEBHOOK_DELIVERY_RETENTION_DAYS)
    deleted = webhook_events.webhook_deliveries_prune(older_than=cutoff)
    logger.info("webhook.deliveries_pruned", extra={"count": deleted})


def _enqueue_syncs(ids: Sequence[int], *, full: bool = False, interactive: bool = False) -> int:
    """Enqueue a ``sync_repository`` (``interactive``: ``sync_repository_now``) message per
    id, one pipelined round trip per chunk, marking each chunk ``queued`` once it is in the
    queue. Raises ``EnqueueFailed``."""
    actor = sync_repository_now if interactive else sync_repository
    count = 0
    for chunk in chunks(ids):
        # Read before the send: a status set at or after it can only be a worker's that got
        # to the repository first, and the mark must not overwrite it.
        sent_at = timezone.now()
        messages = (actor.message_with_options(args=(pk,), kwargs={"full": full}) for pk in chunk)
        try:
            enqueue_many(messages)
        except UNAVAILABLE as error:
            # The failed chunk is not marked: a message of it may have made it, but a
            # repository showing its old status while a message waits is harmless, one
            # showing "queued" with none would be stuck.
            raise EnqueueFailed(enqueued=count, total=len(ids), error=error) from error
        sync_outcome.repository_syncs_enqueued(tracked_repo_ids=chunk, sent_at=sent_at)
        count += len(chunk)
    return count


@dramatiq.actor(queue_name=SWEEP_QUEUE, max_retries=0)
def recover_webhook_deliveries() -> None:
    """Every few minutes (``settings.SCHEDULED_TASKS``): redeliver failed webhook deliveries
    and sync the repositories whose lost events cannot be redelivered
    (``services.webhook_recovery``). No retries: the next run is minutes away and resumes."""
    from apps.integrations.services.webhook_recovery import webhook_deliveries_recover

    enqueue_repository_syncs(tracked_repo_ids=webhook_deliveries_recover().to_sync)
