"""A sync as the task layer runs it: load, check, take the lease, sync a bounded slice.

Knows nothing about Dramatiq: it returns what should happen next (done, continue, wait,
nothing) and lets GitHub's typed errors propagate; ``tasks.py`` turns that into messages.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from django.conf import settings

from apps.integrations.models import TrackedRepository
from apps.integrations.services.github_sync import SyncResult, repository_sync
from apps.integrations.services.sync_lease import LeaseLost, lease_acquire, lease_holder

logger = logging.getLogger(__name__)

Action = Literal["synced", "continue", "wait", "dropped", "skipped"]


@dataclass(frozen=True)
class SyncJobOutcome:
    """``synced``: a pass finished. ``continue``: the slice ended, checkpoint saved, more to
    do. ``wait``: an older sync holds the lease until ``wait_until``. ``dropped``: a newer
    sync holds it and covers this request. ``skipped``: nothing to sync (missing, inactive or
    disconnected)."""

    action: Action
    reason: str = ""
    result: SyncResult | None = None
    wait_until: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"action": self.action}
        if self.reason:
            data["reason"] = self.reason
        if self.result is not None:
            data["summary"] = self.result.summary()
            data["requests"] = self.result.requests_used
        if self.wait_until is not None:
            data["wait_until"] = self.wait_until.isoformat()
        return data


def syncable_repository(tracked_repo_id: int) -> tuple[TrackedRepository | None, str]:
    """The repository if a sync should run for it, else None and why not."""
    repo = (
        TrackedRepository.objects.select_related("integration", "team")
        .filter(pk=tracked_repo_id)
        .first()
    )
    if repo is None:
        return None, "missing"
    if not repo.is_active:
        return None, "inactive"
    if not repo.integration.is_connected:
        return None, "disconnected"
    return repo, ""


def repository_sync_job(
    *,
    tracked_repo_id: int,
    requested_at: datetime | None,
    request_id: str = "",
    full: bool = False,
    time_budget: float | None = None,
) -> SyncJobOutcome:
    """Run one bounded slice of a sync of ``tracked_repo_id``, under its lease.

    ``requested_at`` is when the request (message) was made; it decides between dropping and
    waiting when another sync holds the lease (see ``sync_lease``). ``request_id`` lets a
    retried full sync resume its own pass. GitHub errors propagate.
    """
    repo, why_not = syncable_repository(tracked_repo_id)
    if repo is None:
        logger.info("repo_sync.skipped", extra={"repo_id": tracked_repo_id, "reason": why_not})
        return SyncJobOutcome("skipped", why_not)

    lease = lease_acquire(tracked_repo=repo)
    if lease is None:
        holder = lease_holder(tracked_repo=repo)
        if holder is None:  # released between the two queries: just try again
            return SyncJobOutcome("wait", "lease released meanwhile", wait_until=None)
        # A full resync must not ride on an incremental one that happens to be running.
        if requested_at is not None and holder.taken_at >= requested_at and not full:
            logger.info("repo_sync.dropped", extra={"repo_id": repo.pk})
            return SyncJobOutcome("dropped", "a sync that started later is running")
        return SyncJobOutcome("wait", "an earlier sync is running", wait_until=holder.expires_at)

    with lease:
        try:
            result = repository_sync(
                tracked_repo=repo,
                full=full,
                request_id=request_id,
                time_budget=(
                    settings.SYNC_MESSAGE_TIME_BUDGET_SECONDS
                    if time_budget is None
                    else time_budget
                ),
                heartbeat=lease.renew,
            )
        except LeaseLost:
            logger.warning("repo_sync.lease_lost", extra={"repo_id": repo.pk})
            return SyncJobOutcome("dropped", "lease lost to another sync")
    return SyncJobOutcome("synced" if result.complete else "continue", result=result)
