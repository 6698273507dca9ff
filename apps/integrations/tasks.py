"""Dramatiq actors: thin wrappers that take ids, call services, and turn "come back later"
into delayed messages.

Retry policy is configuration: GitHub's permanent answers are in ``throws`` (no retries),
transient ones go through the Retries middleware (5 retries, 15 s doubling, capped at 10 min,
so a persistent failure shows as ``error`` well within the hour). Rate limits are not failures:
the message is sent again, delayed until GitHub says to come back, as a fresh message so the
retry budget stays whole; the sync resumes from its checkpoint. No worker thread ever sleeps
waiting for a limit. The outcome (status, error) is recorded by ``SyncOutcomeMiddleware``.
"""

from __future__ import annotations

import logging
import random
from datetime import UTC, datetime, timedelta
from functools import partial

import dramatiq
from django.conf import settings
from django.db import transaction
from dramatiq.middleware import CurrentMessage

from apps.integrations.broker import enqueue_many
from apps.integrations.models import TrackedRepository
from apps.integrations.services import sync_outcome
from apps.integrations.services.github_client import (
    GitHubForbidden,
    GitHubNotConnected,
    GitHubNotFound,
    GitHubPrimaryRateLimit,
    GitHubRateLimited,
    GitHubRequestError,
    GitHubSecondaryRateLimit,
    GitHubUnauthorized,
    secondary_backoff,
)
from apps.integrations.services.sync_jobs import repository_sync_job

logger = logging.getLogger(__name__)

QUEUE = "github_sync"
# GitHub answers that retrying cannot change.
PERMANENT_ERRORS = (
    GitHubUnauthorized,
    GitHubNotConnected,
    GitHubNotFound,
    GitHubForbidden,
    GitHubRequestError,
)


@dramatiq.actor(
    queue_name=QUEUE,
    max_retries=5,
    min_backoff=15_000,
    max_backoff=600_000,
    throws=PERMANENT_ERRORS,
    # Far above the per-message work budget (SYNC_MESSAGE_TIME_BUDGET_SECONDS), so it only
    # ever stops a sync that hangs.
    time_limit=20 * 60 * 1000,
    records_sync_outcome=True,
)
def sync_repository(tracked_repo_id: int, full: bool = False, secondary_limits: int = 0) -> dict:
    """Sync one tracked repository (incremental, or full when never synced or ``full``)."""
    message = CurrentMessage.get_current_message()
    try:
        outcome = repository_sync_job(
            tracked_repo_id=tracked_repo_id,
            requested_at=_requested_at(message),
            # Retries and redeliveries keep the message id: a full sync they repeat resumes.
            request_id=message.message_id if message else "",
            full=full,
        )
    except GitHubRateLimited as limit:
        return _defer(tracked_repo_id, limit, secondary_limits)

    if outcome.action == "continue":
        # A large backfill: this message did its share; the next one resumes from the
        # checkpoint (never "full" again, which would restart the pass).
        sync_repository.send(tracked_repo_id)
    elif outcome.action == "wait":
        wait = (outcome.wait_until or datetime.now(UTC)) - datetime.now(UTC)
        sync_repository.send_with_options(
            args=(tracked_repo_id,),
            kwargs={"full": full},
            delay=_millis(max(wait, timedelta(0)) + timedelta(seconds=random.uniform(1, 5))),  # noqa: S311
        )
    return outcome.as_dict()


def _defer(tracked_repo_id: int, limit: GitHubRateLimited, secondary_limits: int) -> dict:
    now = datetime.now(UTC)
    jitter = timedelta(seconds=random.uniform(0, settings.GITHUB_RATE_LIMIT_JITTER_SECONDS))  # noqa: S311
    if isinstance(limit, GitHubPrimaryRateLimit):
        # The jitter spreads the repositories sharing this token over the moments after the
        # reset instead of all of them hitting GitHub in the same second.
        retry_at = max(limit.reset_at, now) + jitter
        secondary_limits = 0
    else:
        # GitHub: wait Retry-After when given; otherwise at least a minute, backing off
        # exponentially while the limit persists.
        secondary_limits += 1
        assert isinstance(limit, GitHubSecondaryRateLimit)
        wait = (
            limit.retry_after
            if limit.from_header
            else secondary_backoff(secondary_limits, floor=limit.retry_after)
        )
        retry_at = now + timedelta(seconds=wait) + jitter
    sync_repository.send_with_options(
        args=(tracked_repo_id,),
        kwargs={"secondary_limits": secondary_limits},
        delay=_millis(retry_at - now),
    )
    logger.info(
        "repo_sync.deferred",
        extra={
            "repo_id": tracked_repo_id,
            "retry_at": retry_at.isoformat(),
            "status": limit.status,
        },
    )
    return {"action": "deferred", "retry_at": retry_at.isoformat()}


def _requested_at(message: dramatiq.Message | None) -> datetime | None:
    """When the message was sent, rounded up: the timestamp is truncated to the
    millisecond, and a lease taken within that millisecond must count as "not after"."""
    if message is None:
        return None
    return datetime.fromtimestamp((message.message_timestamp + 1) / 1000, tz=UTC)


def _millis(delta: timedelta) -> int:
    return max(int(delta.total_seconds() * 1000), 0)


@dramatiq.actor(queue_name=QUEUE, max_retries=3)
def sync_all_repositories() -> int:
    """The daily fan-out: one ``sync_repository`` message per active repository whose
    integration is connected, each marked ``queued``. Returns how many were enqueued."""
    ids = list(
        TrackedRepository.objects.filter(
            is_active=True, integration__credential__isnull=False
        ).values_list("pk", flat=True)
    )
    # Marked before sending: a worker may finish a repository before this loop ends, and its
    # "idle" must not be overwritten by a late "queued".
    with transaction.atomic():
        sync_outcome.repository_sync_queued(tracked_repo_ids=ids)
    count = enqueue_many(sync_repository.message(pk) for pk in ids)
    logger.info("repo_sync.fanout", extra={"count": count})
    return count


def enqueue_repository_syncs(*, tracked_repo_ids: list[int], full: bool = False) -> int:
    """Mark repositories ``queued`` and send their sync messages once the transaction commits
    (the admin action and operators' scripts use this)."""
    sync_outcome.repository_sync_queued(tracked_repo_ids=tracked_repo_ids)
    messages = [
        sync_repository.message_with_options(args=(pk,), kwargs={"full": full})
        for pk in tracked_repo_ids
    ]
    transaction.on_commit(partial(enqueue_many, messages))
    return len(messages)
