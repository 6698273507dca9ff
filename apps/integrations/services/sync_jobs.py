"""A sync as workers and ``manage.py sync_repo`` both run it: load, check, take the lease,
record ``syncing``, sync (a bounded slice for workers, everything for the CLI), record the
outcome.

Knows nothing about Dramatiq: it returns what should happen next (done, continue, wait,
nothing) and lets GitHub's typed errors propagate; ``tasks.py`` turns outcomes into messages,
and errors are recorded by whoever decides whether they are final (the Dramatiq middleware,
after the Retries middleware decided; the CLI at once).

Every write of the sync, its outcome included, is fenced by the lease (see ``sync_lease``):
a sync that lost its lease while stalled writes nothing after it resumes. Interruptions
(Ctrl-C, Dramatiq's ``TimeLimitExceeded``/``Shutdown``, a lost lease) stop a sync without
writing anything: not the outcome, not the lease. A row left ``syncing`` by an
interrupted sync keeps a lease that lapses (or, on the same machine, whose holder is gone),
and the next sync resumes from the checkpoint the last committed page saved.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from django.db import transaction

from apps.integrations import metrics
from apps.integrations.models import TrackedRepository
from apps.integrations.services import sync_outcome
from apps.integrations.services.github_client import client_for_integration
from apps.integrations.services.github_sync import (
    ProgressCallback,
    SyncResult,
    repository_sync,
)
from apps.integrations.services.sync_lease import LeaseLost, lease_acquire, lease_holder

logger = logging.getLogger(__name__)

Action = Literal["synced", "continue", "wait", "dropped", "lease_lost", "skipped"]


@dataclass(frozen=True)
class SyncJobOutcome:
    """``synced``: a pass finished. ``continue``: the slice ended, checkpoint saved, more to
    do. ``wait``: an older sync holds the lease until ``wait_until`` (None: try again at
    once). ``dropped``: a newer sync holds it and covers this request. ``lease_lost``: another
    sync took the lease over mid-sync; this one stopped without writing. ``skipped``: nothing
    to sync (``reason``: missing, inactive or disconnected)."""

    action: Action
    reason: str = ""
    result: SyncResult | None = None
    wait_until: datetime | None = None


def syncable_repository(tracked_repo_id: int) -> tuple[TrackedRepository | None, str]:
    """The repository if a sync should run for it, else None and why not."""
    repo = (
        TrackedRepository.objects.syncable()
        .select_related("integration", "team")
        .filter(pk=tracked_repo_id)
        .first()
    )
    if repo is not None:
        return repo, ""
    # Only to say why in the log and to the CLI; the decision was the query above.
    is_active = (
        TrackedRepository.objects.filter(pk=tracked_repo_id)
        .values_list("is_active", flat=True)
        .first()
    )
    if is_active is None:
        return None, "missing"
    return None, "inactive" if not is_active else "disconnected"


@metrics.counts_sync_outcomes
def repository_sync_job(
    *,
    tracked_repo_id: int,
    requested_at: datetime | None,
    time_budget: float | None,
    request_id: str = "",
    full: bool = False,
    days_back: int | None = None,
    all_history: bool = False,
    progress: ProgressCallback | None = None,
    interactive: bool = False,
) -> SyncJobOutcome:
    """Sync ``tracked_repo_id`` under its lease: one slice of at most ``time_budget`` seconds
    (None: to the end), recording ``syncing`` and then ``idle`` or ``queued``.

    ``requested_at`` is when the request (message) was made; it decides between dropping and
    waiting when another sync holds the lease (see ``sync_lease``); None (the CLI) always
    waits. ``request_id`` lets a retried full sync resume its own pass. ``full``,
    ``days_back`` and ``all_history`` are ``repository_sync``'s. ``interactive``: an
    operator asked for this sync (the admin's "sync now", ``sync_repo``): it may spend the
    token's budget down to 0, where bulk syncs leave GITHUB_RATE_RESERVE_FRACTION of it
    (``services.rate_budget``). GitHub errors propagate, unrecorded.
    """
    repo, why_not = syncable_repository(tracked_repo_id)
    if repo is None:
        logger.info("repo_sync.skipped", extra={"repo_id": tracked_repo_id, "reason": why_not})
        return SyncJobOutcome("skipped", why_not)

    lease = lease_acquire(tracked_repo=repo, request_id=request_id)
    if lease is None:
        holder = lease_holder(tracked_repo=repo)
        if holder is None:  # released between the two queries: just try again
            return SyncJobOutcome("wait", "lease released meanwhile")
        if request_id and holder.request_id == request_id:
            # This very request's sync holds the lease: we are its redelivery (its worker
            # stalled or died on another machine). Dropping would leave the sync unfinished;
            # resume once its lease lapses.
            return SyncJobOutcome(
                "wait", "this request's own sync holds the lease", wait_until=holder.expires_at
            )
        # A full resync must not ride on an incremental one that happens to be running.
        if requested_at is not None and holder.taken_at >= requested_at and not full:
            logger.info("repo_sync.dropped", extra={"repo_id": repo.pk})
            return SyncJobOutcome("dropped", "a sync that started later is running")
        return SyncJobOutcome("wait", "an earlier sync is running", wait_until=holder.expires_at)

    try:
        with transaction.atomic():
            lease.fence()
            sync_outcome.repository_sync_started(tracked_repo=repo)
        client = client_for_integration(repo.integration, keep_reserve=not interactive)
        result = repository_sync(
            tracked_repo=repo,
            client=client,
            full=full,
            days_back=days_back,
            all_history=all_history,
            request_id=request_id,
            time_budget=time_budget,
            heartbeat=lease.renew,
            fence=lease.fence,
            progress=progress,
        )
        # Like every write of the sync, its outcome is written only while it holds the lease.
        with transaction.atomic():
            lease.fence()
            if result.complete:
                sync_outcome.repository_sync_succeeded(tracked_repo=repo)
            else:
                sync_outcome.repository_sync_queued(tracked_repo_ids=[repo.pk])
    except LeaseLost:
        # Nothing to release: the lease is another sync's now.
        logger.warning("repo_sync.lease_lost", extra={"repo_id": repo.pk})
        return SyncJobOutcome("lease_lost", "another sync took the lease over")
    except Exception:
        # A failure this sync raised itself (GitHub, the database): let the next sync start
        # at once. Interruptions (BaseException) are not caught: nothing is written then.
        lease.release()
        raise

    lease.release()
    return SyncJobOutcome("synced" if result.complete else "continue", result=result)
