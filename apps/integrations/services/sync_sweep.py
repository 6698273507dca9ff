"""The sweep: repositories whose status nothing will change any more.

Each status is a promise that something is under way: ``queued`` that a message will run,
``syncing`` that a sync is running, ``rate_limited`` that a deferred message comes back at the
retry time. Each can outlive its cause: a worker killed mid-sync, a message lost with a Redis
that restarted without persistence, a continuation or retry that could not be sent, a fan-out
that stopped halfway. The sweep (run every few minutes by ``tasks.sweep_stuck_repositories``)
finds those rows; the task layer sends them a new message, which marks them ``queued`` again.

A repository is stuck, unless a sync holds its lease (that sync is running and will record its
own outcome), when it is

- ``syncing`` with its lease lapsed or released, for longer than a lease (so a sync that has
  just failed, between releasing its lease and the middleware recording the error, is not
  mistaken for a dead one);
- ``queued`` for longer than ``SYNC_STUCK_AFTER_SECONDS``. Nothing tells a message that is
  merely waiting from a lost one short of reading Redis, so the threshold is set above any
  wait the task layer schedules itself (a retry's backoff is at most 10 minutes) and above
  the time a daily fan-out takes to drain. Should a message still be waiting past it, the
  second one costs little: dropped by the lease if they meet, otherwise an incremental sync
  whose first request is a free 304;
- ``rate_limited`` with its retry time more than ``SYNC_STUCK_AFTER_SECONDS`` past (the deferred
  message joins the back of the queue at that time);
- requested by a fan-out that has not sent its message for ``REQUEST_GRACE``: a fan-out sends
  thousands of messages in seconds, so that one stopped (and its retry, if any, is over).

Repositories that cannot sync (inactive, or whose integration is disconnected) are never sent
again; the job would skip the message. Left ``queued``, ``syncing`` or ``rate_limited``, they
get a status that stays true instead: ``idle`` keeping the last error (inactive: not meant to
sync), or ``error`` saying the integration is disconnected (cleared when it is reconnected).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from apps.integrations.models import TrackedRepository
from apps.integrations.services import sync_outcome
from apps.integrations.services.sync_lease import lease_free

logger = logging.getLogger(__name__)

Status = TrackedRepository.SyncStatus
# Longer than a fan-out takes to send everything, and than its retries' backoff (15 s, 30 s,
# 60 s): a request still pending after it will not be sent by the fan-out that made it.
REQUEST_GRACE = timedelta(minutes=5)
WAITING = [Status.QUEUED, Status.SYNCING, Status.RATE_LIMITED]


@dataclass(frozen=True)
class SweepResult:
    """``to_enqueue``: syncable repositories to send a sync message for. ``inactive`` and
    ``disconnected``: how many repositories that cannot sync were given a true status."""

    to_enqueue: list[int]
    inactive: int
    disconnected: int


def sweep_repositories(*, now: datetime | None = None) -> SweepResult:
    """Find the stuck repositories (see the module docstring): settle those that cannot sync,
    return the others for the task layer to send again."""
    now = now or timezone.now()
    stuck_before = now - timedelta(seconds=settings.SYNC_STUCK_AFTER_SECONDS)
    not_running = TrackedRepository.objects.filter(lease_free(now))

    stuck = (
        Q(
            sync_status=Status.SYNCING,
            sync_status_changed_at__lte=now - timedelta(seconds=settings.SYNC_LEASE_SECONDS),
        )
        | Q(sync_status=Status.QUEUED, sync_status_changed_at__lte=stuck_before)
        | Q(sync_status=Status.RATE_LIMITED, sync_retry_at__lte=stuck_before)
        # Rate limited before the retry time was stored: the status's age stands in for it.
        | Q(
            sync_status=Status.RATE_LIMITED,
            sync_retry_at__isnull=True,
            sync_status_changed_at__lte=stuck_before,
        )
        | Q(sync_requested_at__lte=now - REQUEST_GRACE)
    )
    rows = list(
        not_running.syncable().filter(stuck).order_by("pk").values_list("pk", "sync_status")
    )

    cannot_sync = not_running.filter(sync_status__in=WAITING).exclude(
        pk__in=TrackedRepository.objects.syncable().values("pk")
    )
    inactive = sync_outcome.repository_sync_abandoned(
        tracked_repo_ids=cannot_sync.filter(is_active=False).values_list("pk", flat=True),
        reason="inactive",
    )
    disconnected = sync_outcome.repository_sync_abandoned(
        tracked_repo_ids=cannot_sync.filter(is_active=True).values_list("pk", flat=True),
        reason="disconnected",
    )

    result = SweepResult(
        to_enqueue=[pk for pk, _ in rows], inactive=inactive, disconnected=disconnected
    )
    if rows or inactive or disconnected:
        logger.info(
            "repo_sync.sweep",
            extra={
                # A fan-out's leftovers show the status they had (idle, error).
                "stuck": dict(Counter(status for _, status in rows)),
                "inactive": inactive,
                "disconnected": disconnected,
            },
        )
    return result
