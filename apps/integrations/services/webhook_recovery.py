"""Recovering webhook deliveries that failed (our receiver down, slow or failing).

GitHub retries no delivery by itself. What it offers ("Handling failed webhook deliveries"):
the hook's deliveries of the last three days, newest first, each attempt with the event's
GUID and whether it succeeded (``status == "OK"``), and a redelivery of any of them. Its own
sample script groups the attempts by GUID and redelivers the GUIDs that have no successful
attempt; this does the same, with two additions:

- Each hook's listing stops at the newest delivery the previous pass examined
  (``webhook_deliveries_cursor``), so an idle hook costs one request per check; a token
  with many hooks has each checked less often (``LISTINGS_PER_TOKEN_PER_HOUR``).
- A GUID is redelivered once. If the listing already shows a redelivery of it that failed
  too, redelivering again would most likely fail the same way: it is counted in
  ``webhook_failed_deliveries`` and the repository gets an incremental sync instead, which
  finds whatever the lost event carried (so does a hook that was deleted on GitHub).

Rate limits end the pass for that token; the cursor of a hook whose listing did not finish
is not moved, so the next pass starts that hook over (a redelivery it already asked for then
shows up as one and is not asked for again). Knows nothing about Dramatiq: the actor
enqueues ``to_sync``.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.utils import timezone

from apps.integrations.models import GitHubIntegration, TrackedRepository
from apps.integrations.services import sync_outcome
from apps.integrations.services.github_client import (
    GitHubClient,
    GitHubError,
    GitHubNotFound,
    GitHubRateLimited,
    GitHubRequestError,
    client_for_integration,
    parse_github_time,
)
from apps.integrations.services.webhook_registration import WEBHOOK_EVENTS

logger = logging.getLogger(__name__)

# GitHub lists, and will redeliver, the deliveries of the last three days.
DELIVERY_WINDOW = timedelta(days=3)
# An idle hook still costs one listing per check. A token with many hooks has each checked
# less often, so checks take at most this many of its requests an hour (a tenth of a
# personal token's 5,000): 40 hooks are checked every 5 minutes (the schedule), 500 every
# hour, well inside GitHub's three days.
LISTINGS_PER_TOKEN_PER_HOUR = 500
CHECK_INTERVAL = timedelta(minutes=5)
# A pass that starts a little early (scheduler jitter) still checks what is due.
INTERVAL_SLACK = timedelta(seconds=30)
HOOK_GONE = "the hook is gone on GitHub; run manage.py register_webhooks to register it again"


@dataclass(frozen=True)
class HookRecovery:
    """One hook's pass: ``examined`` deliveries newer than the cursor, ``redelivered`` GUIDs
    asked for again, ``unrecoverable`` GUIDs (a redelivery failed too, or GitHub refused
    one)."""

    examined: int
    redelivered: int
    unrecoverable: int
    newest_id: int | None


@dataclass
class RecoveryResult:
    hooks_checked: int = 0
    redelivered: int = 0
    unrecoverable: int = 0
    hooks_gone: int = 0
    failed: int = 0
    rate_limited_integrations: int = 0
    # Repositories whose lost events a sync must fetch (the actor enqueues them).
    to_sync: list[int] = field(default_factory=list)


def webhook_deliveries_recover(
    *, now: datetime | None = None, listings_per_hour: int = LISTINGS_PER_TOKEN_PER_HOUR
) -> RecoveryResult:
    """One pass over every syncable repository with a hook that is due for a check."""
    now = now or timezone.now()
    result = RecoveryResult()
    # The same GitHub repository tracked by two teams shares one hook (found by its URL):
    # it is checked once, and what is found applies to every row.
    groups: dict[tuple[int, int], list[TrackedRepository]] = defaultdict(list)
    repos = (
        TrackedRepository.objects.syncable()
        .filter(webhook_id__isnull=False)
        .select_related("integration", "team")
        .order_by("pk")
    )
    for repo in repos:
        groups[(repo.github_repo_id, repo.webhook_id)].append(repo)

    hooks_per_integration: dict[int, int] = defaultdict(int)
    for rows in groups.values():
        hooks_per_integration[rows[0].integration_id] += 1

    clients: dict[int, GitHubClient] = {}
    limited: set[int] = set()
    for rows in groups.values():
        repo = rows[0]
        integration: GitHubIntegration = repo.integration
        if integration.pk in limited:
            continue
        interval = max(
            CHECK_INTERVAL,
            timedelta(hours=hooks_per_integration[integration.pk] / max(listings_per_hour, 1)),
        )
        checked = repo.webhook_checked_at
        if checked is not None and checked > now - interval + INTERVAL_SLACK:
            continue
        ids = [row.pk for row in rows]
        try:
            if integration.pk not in clients:
                clients[integration.pk] = client_for_integration(integration)
            recovery = hook_deliveries_recover(
                tracked_repo=repo, client=clients[integration.pk], now=now
            )
        except GitHubRateLimited as limit:
            limited.add(integration.pk)
            logger.info(
                "webhook_recovery.rate_limited",
                extra={"integration_id": integration.pk, "error": str(limit)},
            )
            continue
        except GitHubNotFound:
            # Deleted on GitHub (or the repository is gone): state "none" until
            # register_webhooks repairs it; whatever it would have delivered, a sync finds.
            TrackedRepository.objects.filter(pk__in=ids).update(
                webhook_id=None,
                webhook_error=HOOK_GONE,
                webhook_deliveries_cursor="",
                webhook_checked_at=now,
            )
            result.hooks_gone += 1
            result.to_sync.extend(ids)
            logger.warning("webhook_recovery.hook_gone", extra={"repo_id": repo.pk})
            continue
        except GitHubError as error:
            TrackedRepository.objects.filter(pk__in=ids).update(
                webhook_error=f"could not check the hook's deliveries: {error}",
                webhook_checked_at=now,
            )
            result.failed += 1
            logger.warning(
                "webhook_recovery.failed", extra={"repo_id": repo.pk, "error": str(error)}
            )
            continue
        update: dict[str, object] = {
            "webhook_checked_at": now,
            "webhook_failed_deliveries": recovery.unrecoverable,
            "webhook_error": "",
        }
        if recovery.newest_id is not None:
            update["webhook_deliveries_cursor"] = str(recovery.newest_id)
        TrackedRepository.objects.filter(pk__in=ids).update(**update)
        result.hooks_checked += 1
        result.redelivered += recovery.redelivered
        result.unrecoverable += recovery.unrecoverable
        if recovery.unrecoverable:
            result.to_sync.extend(ids)
    result.rate_limited_integrations = len(limited)
    if result.to_sync:
        # Noted before the actor sends them: the cursors have moved past these deliveries,
        # so should the queue be down, the sweep must send the syncs (as for a fan-out cut
        # short) or nothing would.
        sync_outcome.repository_syncs_requested(
            repos=TrackedRepository.objects.filter(pk__in=result.to_sync), requested_at=now
        )
    logger.info(
        "webhook_recovery.pass",
        extra={
            "hooks": result.hooks_checked,
            "redelivered": result.redelivered,
            "unrecoverable": result.unrecoverable,
            "hooks_gone": result.hooks_gone,
            "rate_limited_integrations": result.rate_limited_integrations,
        },
    )
    return result


def hook_deliveries_recover(
    *, tracked_repo: TrackedRepository, client: GitHubClient, now: datetime
) -> HookRecovery:
    """List the hook's deliveries newer than its cursor (and within GitHub's window),
    redeliver each GUID that has no successful attempt and no redelivery yet, and count the
    GUIDs whose redelivery failed. Raises the GitHubError a request met (nothing is written
    here; the caller records the outcome)."""
    full_name, hook_id = tracked_repo.full_name, int(tracked_repo.webhook_id or 0)
    seen_up_to = _cursor_id(tracked_repo.webhook_deliveries_cursor)
    oldest = now - DELIVERY_WINDOW
    attempts: dict[str, list[dict]] = defaultdict(list)
    newest_id: int | None = None
    examined = 0
    cursor: str | None = None
    done = False
    while not done:
        page = client.list_hook_deliveries_page(full_name, hook_id, cursor=cursor)
        for delivery in page.items:
            delivery_id = int(delivery["id"])
            delivered_at = parse_github_time(delivery.get("delivered_at"))
            if delivery_id <= seen_up_to or (delivered_at is not None and delivered_at < oldest):
                done = True
                break
            newest_id = delivery_id if newest_id is None else max(newest_id, delivery_id)
            examined += 1
            if delivery.get("event") in WEBHOOK_EVENTS:
                attempts[delivery["guid"]].append(delivery)
        cursor = page.next_cursor
        done = done or not cursor

    redelivered = unrecoverable = 0
    for guid_attempts in attempts.values():
        if any(a.get("status") == "OK" for a in guid_attempts):
            continue
        if any(a.get("redelivery") for a in guid_attempts):
            unrecoverable += 1
            continue
        latest = max(guid_attempts, key=lambda a: int(a["id"]))
        try:
            client.redeliver_hook_delivery(full_name, hook_id, int(latest["id"]))
        except GitHubRequestError:
            # 422: out of GitHub's window (or refused); only a sync can make up for it.
            unrecoverable += 1
            continue
        redelivered += 1
    return HookRecovery(
        examined=examined,
        redelivered=redelivered,
        unrecoverable=unrecoverable,
        newest_id=newest_id,
    )


def _cursor_id(cursor: str) -> int:
    try:
        return int(cursor)
    except ValueError:
        return 0
