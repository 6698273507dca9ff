"""What a repository shows after each way a sync message can end, through a real Worker on the
StubBroker with the production middleware list (SyncOutcomeMiddleware, then Retries)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dramatiq
import pytest

from apps.integrations.middleware import SyncOutcomeMiddleware
from apps.integrations.models import TrackedRepository
from apps.integrations.services.github_client import GitHubTransientError
from apps.integrations.tasks import QUEUE, sync_repository
from tests import builders
from tests.processes import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

REPO = "acme/widgets"


@pytest.fixture
def repo(emulator, days_ago):
    emulator.generate_pulls(REPO, 150, start=days_ago(20), step=timedelta(hours=2))
    return builders.tracked_repo(emulator, REPO)


def status(repo: TrackedRepository) -> tuple[str, str]:
    return TrackedRepository.objects.values_list("sync_status", "last_sync_error").get(pk=repo.pk)


def test_finished_sync_shows_idle(stub_broker, stub_worker, repo):
    sync_repository.send(repo.pk)
    stub_broker.join(QUEUE, timeout=60_000)

    assert status(repo) == ("idle", "")


def test_sync_continued_in_a_new_message_shows_queued(stub_broker, repo, settings):
    settings.SYNC_MESSAGE_TIME_BUDGET_SECONDS = 0  # one page per message

    sync_repository(repo.pk)

    (continuation,) = [dramatiq.Message.decode(m) for m in stub_broker.queues[QUEUE].queue]
    assert continuation.args == (repo.pk,)
    assert status(repo) == ("queued", "")


def test_rate_limited_sync_shows_rate_limited_until_the_reset(stub_broker, repo, emulator):
    reset_at = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
    emulator.set_rate_limit(builders.TOKEN, remaining=0, reset_at=reset_at)

    sync_repository(repo.pk)

    state, text = status(repo)
    shown = datetime.fromisoformat(text.removeprefix("rate limited until ").replace("Z", "+00:00"))
    assert state == "rate_limited" and text.startswith("rate limited until ")
    assert reset_at <= shown <= reset_at + timedelta(seconds=1)  # jitter is 0.2 s in tests


def test_transient_error_with_retries_left_shows_queued_with_the_retry_count(
    stub_broker, stub_worker, repo, emulator
):
    emulator.fail_next(status=502, count=100)

    # A minute's backoff: the retry waits while we look.
    sync_repository.send_with_options(args=(repo.pk,), min_backoff=60_000, max_backoff=60_000)
    wait_until(
        lambda: status(repo)[0] != "idle" and "retry" in status(repo)[1], timeout=60, what="a retry"
    )

    state, error = status(repo)
    assert state == "queued"
    assert "502" in error and error.endswith("(retry 1 of 5)")
    assert emulator.count_requests() == 1


def test_transient_error_with_retries_exhausted_shows_error(
    stub_broker, stub_worker, repo, emulator
):
    emulator.fail_next(status=502, count=100)

    sync_repository.send_with_options(
        args=(repo.pk,), max_retries=2, min_backoff=10, max_backoff=20
    )
    stub_broker.join(QUEUE, timeout=60_000, fail_fast=False)

    state, error = status(repo)
    assert emulator.count_requests() == 3  # the first try and 2 retries
    assert state == "error" and "502" in error and "retry" not in error


def test_permanent_error_shows_error_at_once(stub_broker, stub_worker, repo, emulator):
    TrackedRepository.objects.filter(pk=repo.pk).update(full_name="acme/deleted")

    sync_repository.send(repo.pk)
    stub_broker.join(QUEUE, timeout=60_000, fail_fast=False)

    state, error = status(repo)
    assert emulator.count_requests() == 1
    assert state == "error" and "404" in error


def test_actor_with_retry_when_shows_what_retries_decided(stub_broker, stub_worker, repo):
    seen_by_attempt: list[tuple[str, str]] = []

    # Retries asks retry_when, not max_retries (20 by default): one retry, then give up.
    @dramatiq.actor(
        queue_name=QUEUE,
        records_sync_outcome=True,
        retry_when=lambda retries, exception: retries < 1,
        min_backoff=10,
        max_backoff=20,
    )
    def flaky_sync(tracked_repo_id: int) -> None:
        seen_by_attempt.append(status(repo))
        raise GitHubTransientError("GitHub answered 503")

    flaky_sync.send(repo.pk)
    stub_broker.join(QUEUE, timeout=60_000, fail_fast=False)

    assert len(seen_by_attempt) == 2
    assert seen_by_attempt[1] == ("queued", "GitHub answered 503 (retry 1)")
    assert status(repo) == ("error", "GitHub answered 503")


def test_system_check_refuses_the_middleware_after_retries(stub_broker):
    from apps.integrations.checks import sync_outcome_middleware_order

    assert sync_outcome_middleware_order() == []
    outcome = next(m for m in stub_broker.middleware if isinstance(m, SyncOutcomeMiddleware))
    stub_broker.middleware.remove(outcome)
    stub_broker.middleware.append(outcome)  # after Retries: its after-hook would run first

    (error,) = sync_outcome_middleware_order()
    assert error.id == "integrations.E001"
