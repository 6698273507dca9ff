"""When to come back after a GitHub rate limit: the one place with those rules.

The HTTP client only reports what GitHub said (``GitHubPrimaryRateLimit.reset_at``,
``GitHubSecondaryRateLimit.retry_after``); the CLI, the outcome service and the task layer ask
here what that means in time.

GitHub's rules ("Rate limits for the REST API"): after a primary limit, wait for
X-RateLimit-Reset (an hour when it is missing). After a secondary limit, wait Retry-After when
given; else, if X-RateLimit-Remaining is 0, until X-RateLimit-Reset; else at least a minute,
waiting longer while the limit persists.

Many repositories sharing a token meet its primary limit together and would all come back at
the one reset, more than the new window covers. A bulk message deferred to a reset carries a
``rate_budget.Ticket`` (its place among those deferred to that reset): ticket k of cost c lands
in window floor(k*c / usable) after the reset, spread evenly within that window, so a fan-out
of 2,000 repositories on a token covering 500 per window comes back over four windows.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from django.conf import settings

from apps.integrations.services.github_client import (
    GitHubPrimaryRateLimit,
    GitHubRateLimited,
    GitHubSecondaryRateLimit,
)

if TYPE_CHECKING:
    from apps.integrations.services.rate_budget import Ticket

PRIMARY_WINDOW = timedelta(hours=1)
SECONDARY_MIN_WAIT = timedelta(seconds=60)
SECONDARY_MAX_WAIT = timedelta(hours=1)


def secondary_backoff(attempt: int) -> timedelta:
    """The wait after the ``attempt``-th secondary limit in a row that came without a
    Retry-After: a minute, doubling while the limit persists, capped at an hour."""
    return min(SECONDARY_MIN_WAIT * 2 ** max(attempt - 1, 0), SECONDARY_MAX_WAIT)


def earliest_retry(
    limit: GitHubRateLimited, *, secondary_attempt: int = 1, now: datetime | None = None
) -> datetime:
    """The moment GitHub allows the next request, without jitter."""
    now = now or datetime.now(UTC)
    if isinstance(limit, GitHubPrimaryRateLimit):
        return max(limit.reset_at or now + PRIMARY_WINDOW, now)
    assert isinstance(limit, GitHubSecondaryRateLimit)
    if limit.retry_after is not None:
        return limit.at + timedelta(seconds=limit.retry_after)
    if limit.reset_at is not None:
        return max(limit.reset_at, now + timedelta(seconds=1))
    return limit.at + secondary_backoff(secondary_attempt)


@dataclass(frozen=True)
class Deferral:
    """A rate-limited message comes back at ``retry_at``; ``secondary_limits`` is how many
    secondary limits in a row it has met (0 after a primary one), carried by the next message
    so the backoff grows."""

    retry_at: datetime
    secondary_limits: int

    def delay_ms(self, *, now: datetime | None = None) -> int:
        delta = self.retry_at - (now or datetime.now(UTC))
        return max(int(delta.total_seconds() * 1000), 0)


def deferral_for(
    limit: GitHubRateLimited,
    *,
    secondary_limits: int,
    ticket: Ticket | None = None,
    now: datetime | None = None,
) -> Deferral:
    """When a message that met ``limit`` runs again (``secondary_limits``: how many secondary
    limits in a row its predecessors met). A random spread (GITHUB_RATE_LIMIT_JITTER_SECONDS)
    keeps the repositories sharing a token from all returning in the same second. After a
    primary limit, a ``ticket`` (see the module docstring) places the message in the
    windows after the reset."""
    count = 0 if isinstance(limit, GitHubPrimaryRateLimit) else secondary_limits + 1
    jitter = timedelta(seconds=random.uniform(0, settings.GITHUB_RATE_LIMIT_JITTER_SECONDS))  # noqa: S311
    retry_at = earliest_retry(limit, secondary_attempt=max(count, 1), now=now) + jitter
    if ticket is not None and isinstance(limit, GitHubPrimaryRateLimit):
        retry_at += window_offset(ticket)
    return Deferral(retry_at=retry_at, secondary_limits=count)


def window_offset(ticket: Ticket) -> timedelta:
    """How long after the reset ``ticket``'s message comes back: the budget of each window
    (``usable``) covers ``usable / cost`` messages, spread evenly over the window."""
    window, into = divmod(ticket.number * ticket.cost, ticket.usable)
    return PRIMARY_WINDOW * window + PRIMARY_WINDOW * (into / ticket.usable)
