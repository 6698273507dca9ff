"""When a rate-limited sync comes back (services.rate_limits), from GitHub's real answers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from apps.integrations.services import rate_limits
from apps.integrations.services.github_client import (
    GitHubPrimaryRateLimit,
    GitHubRateLimited,
    GitHubSecondaryRateLimit,
    client_for_token,
)
from apps.integrations.services.rate_budget import Ticket
from tests import builders

REPO = "acme/widgets"


@pytest.fixture
def refused(emulator):
    """The typed error the client raises for GitHub's next answer."""
    emulator.add_repo(REPO)
    client = client_for_token(builders.TOKEN)

    def call() -> GitHubRateLimited:
        with pytest.raises(GitHubRateLimited) as raised:
            client.get_repository(REPO)
        return raised.value

    return call


def test_primary_limit_comes_back_at_githubs_reset(emulator, refused):
    reset_at = (datetime.now(UTC) + timedelta(minutes=20)).replace(microsecond=0)
    emulator.set_rate_limit(builders.TOKEN, remaining=0, reset_at=reset_at)

    assert rate_limits.earliest_retry(refused()) == reset_at


def test_primary_limit_without_a_reset_header_waits_the_hour_window():
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    limit = GitHubPrimaryRateLimit("limited", status=403, reset_at=None)

    assert rate_limits.earliest_retry(limit, now=now) == now + timedelta(hours=1)


def test_primary_reset_already_past_means_now(emulator):
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    limit = GitHubPrimaryRateLimit("limited", status=403, reset_at=now - timedelta(seconds=5))

    assert rate_limits.earliest_retry(limit, now=now) == now


@pytest.mark.parametrize("status", [403, 429])
def test_secondary_limit_comes_back_after_retry_after(emulator, refused, status):
    emulator.secondary_limit_next(status=status, retry_after=42)

    limit = refused()

    assert isinstance(limit, GitHubSecondaryRateLimit)
    assert rate_limits.earliest_retry(limit) == limit.at + timedelta(seconds=42)


def test_secondary_limit_without_retry_after_waits_a_minute_then_doubles(emulator, refused):
    emulator.secondary_limit_next(status=403, retry_after=None)
    limit = refused()

    waits = [rate_limits.earliest_retry(limit, secondary_attempt=n) - limit.at for n in (1, 2, 3)]

    assert waits == [timedelta(minutes=1), timedelta(minutes=2), timedelta(minutes=4)]


def test_secondary_backoff_is_capped_at_an_hour():
    assert rate_limits.secondary_backoff(30) == timedelta(hours=1)


def test_deferral_adds_at_most_the_configured_jitter(emulator, refused, settings):
    settings.GITHUB_RATE_LIMIT_JITTER_SECONDS = 30
    reset_at = (datetime.now(UTC) + timedelta(minutes=5)).replace(microsecond=0)
    emulator.set_rate_limit(builders.TOKEN, remaining=0, reset_at=reset_at)
    limit = refused()

    retries = {rate_limits.deferral_for(limit, secondary_limits=0).retry_at for _ in range(20)}

    assert all(reset_at <= at <= reset_at + timedelta(seconds=30) for at in retries)
    assert len(retries) > 1  # spread, not one second for every repository


def test_deferral_counts_consecutive_secondary_limits_and_a_primary_resets_the_count(
    emulator, refused, settings
):
    settings.GITHUB_RATE_LIMIT_JITTER_SECONDS = 0
    emulator.secondary_limit_next(status=403, retry_after=None)
    secondary = refused()
    emulator.set_rate_limit(builders.TOKEN, remaining=0)
    primary = refused()

    second = rate_limits.deferral_for(secondary, secondary_limits=1)
    after_primary = rate_limits.deferral_for(primary, secondary_limits=3)

    assert second.secondary_limits == 2
    assert second.retry_at == secondary.at + timedelta(minutes=2)
    assert after_primary.secondary_limits == 0


@pytest.mark.parametrize(
    ("number", "offset"),
    [
        (0, timedelta(0)),  # the first comes back at the reset
        (29, timedelta(minutes=58)),  # 30 fit a window of 90 usable at 3 each, 2 min apart
        (30, timedelta(hours=1)),  # the 31st starts the next window
        (45, timedelta(hours=1, minutes=30)),
    ],
)
def test_ticket_places_a_deferral_in_the_windows_after_the_reset(emulator, refused, number, offset):
    reset_at = (datetime.now(UTC) + timedelta(minutes=20)).replace(microsecond=0)
    emulator.set_rate_limit(builders.TOKEN, remaining=0, reset_at=reset_at)
    limit = refused()

    deferral = rate_limits.deferral_for(
        limit, secondary_limits=0, ticket=Ticket(number=number, cost=3, usable=90)
    )

    assert timedelta(0) <= deferral.retry_at - (reset_at + offset) <= timedelta(seconds=1)


def test_ticket_does_not_move_a_secondary_limit(emulator, refused):
    emulator.secondary_limit_next(status=429, retry_after=7)
    limit = refused()

    deferral = rate_limits.deferral_for(
        limit, secondary_limits=0, ticket=Ticket(number=45, cost=3, usable=90)
    )

    assert deferral.retry_at - limit.at <= timedelta(seconds=8)
