"""The per-token rate budget (services.rate_budget): recorded from GitHub's answers, taken
before each request, kept above a reserve by bulk syncs, and used to spread deferrals.

GitHub is the emulator over HTTP; the budget lives in a real redis-server (``redis_url``),
or in fakeredis where only the scripts are under test.
"""

from __future__ import annotations

import io
import logging
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta

import dramatiq
import fakeredis
import pytest
import redis
from django.core.management import call_command

from apps.integrations.models import PullRequest, TrackedRepository
from apps.integrations.services import pacing, rate_budget
from apps.integrations.services.github_client import (
    GitHubBudgetExhausted,
    GitHubPrimaryRateLimit,
    client_for_token,
)
from apps.integrations.services.rate_budget import KEY_PREFIX, RateBudget
from apps.integrations.tasks import (
    INTERACTIVE_QUEUE,
    QUEUE,
    sync_repository,
    sync_repository_now,
)
from tests import builders
from tests.builders import connected_team
from tests.processes import ROOT
from tformance.test_settings import TEST_ENCRYPTION_KEYS

REPO = "acme/widgets"
WINDOW = timedelta(hours=1)


@pytest.fixture
def budget_redis(redis_url, settings) -> redis.Redis:
    """The budget (and the tickets) in the test's redis-server."""
    settings.REDIS_URL = redis_url
    pacing._redis_client.cache_clear()
    yield redis.Redis.from_url(redis_url, decode_responses=True)
    pacing._redis_client.cache_clear()


def stored(client: redis.Redis, resource: str, token: str = builders.TOKEN) -> dict[str, int]:
    state = client.hgetall(f"{KEY_PREFIX}{pacing.token_digest(token)}:{resource}")
    return {name: int(value) for name, value in state.items()}


def in_a_while(emulator, minutes: int = 30) -> datetime:
    return (emulator.now() + timedelta(minutes=minutes)).replace(microsecond=0)


def dry_token(emulator, *, limit: int = 5000, reset_at: datetime) -> None:
    """The token's REST budget is spent, and the budget has heard so from GitHub."""
    emulator.set_rate_limit(builders.TOKEN, remaining=1, reset_at=reset_at, limit=limit)
    client_for_token(builders.TOKEN).get_authenticated_user()
    emulator.clear_requests()


def deferred_etas(broker, queue: str = QUEUE) -> list[datetime]:
    return sorted(
        datetime.fromtimestamp(dramatiq.Message.decode(data).options["eta"] / 1000, tz=UTC)
        for data in broker.queues[f"{queue}.DQ"].queue
    )


# -- recording -------------------------------------------------------------------------------


def test_budget_is_recorded_from_each_answer_rest_and_graphql_apart(emulator, budget_redis):
    pr = emulator.add_pull(REPO)
    rest_reset, graphql_reset = in_a_while(emulator, 20), in_a_while(emulator, 40)
    emulator.set_rate_limit(builders.TOKEN, remaining=300, reset_at=rest_reset)
    emulator.set_graphql_rate_limit(builders.TOKEN, remaining=70, reset_at=graphql_reset)
    client = client_for_token(builders.TOKEN)

    client.get_repository(REPO)
    client.get_pulls_details(REPO, [pr.number])

    assert stored(budget_redis, "core") == {
        "limit": 5000,
        "remaining": 299,
        "reset": int(rest_reset.timestamp()),
    }
    assert stored(budget_redis, "graphql") == {
        "limit": 5000,
        "remaining": 69,
        "reset": int(graphql_reset.timestamp()),
    }


def test_budget_is_recorded_from_a_refusal_too(emulator, budget_redis):
    reset_at = in_a_while(emulator)
    emulator.set_rate_limit(builders.TOKEN, remaining=0, reset_at=reset_at)

    with pytest.raises(GitHubPrimaryRateLimit):
        client_for_token(builders.TOKEN).get_repository(REPO)

    assert stored(budget_redis, "core")["remaining"] == 0


def test_a_not_modified_answer_gives_its_unit_back(emulator, budget_redis):
    # GitHub does not charge a 304: an idle sync must not wear the budget down.
    emulator.add_repo(REPO)
    client = client_for_token(builders.TOKEN)
    page = client.list_issues_page(REPO, since=None)
    before = stored(budget_redis, "core")["remaining"]

    again = client.list_issues_page(REPO, since=None, etag=page.etag)

    assert again.not_modified
    assert stored(budget_redis, "core")["remaining"] == before


def test_a_stale_answer_within_the_window_does_not_raise_remaining():
    budget = RateBudget(builders.TOKEN, reserve=0, client=fakeredis.FakeRedis())
    reset = int(datetime.now(UTC).timestamp()) + 1800

    budget.record("core", limit=5000, remaining=100, reset=reset)
    budget.record("core", limit=5000, remaining=300, reset=reset)  # sent earlier, came later

    assert budget._client.hget(budget.key("core"), "remaining") == b"100"


def test_an_answer_from_an_older_window_is_ignored_and_a_later_reset_replaces_the_window():
    budget = RateBudget(builders.TOKEN, reserve=0, client=fakeredis.FakeRedis())
    reset = int(datetime.now(UTC).timestamp()) + 1800
    budget.record("core", limit=5000, remaining=100, reset=reset)

    budget.record("core", limit=5000, remaining=4000, reset=reset - 3600)
    assert budget._client.hget(budget.key("core"), "remaining") == b"100"

    budget.record("core", limit=5000, remaining=4999, reset=reset + 3600)
    assert budget._client.hget(budget.key("core"), "remaining") == b"4999"


def test_the_token_itself_is_never_stored_in_redis(emulator, budget_redis):
    emulator.add_repo(REPO)

    client_for_token(builders.TOKEN).get_repository(REPO)

    keys = budget_redis.keys("*")
    assert keys and not [key for key in keys if builders.TOKEN in key]
    assert all(builders.TOKEN not in str(budget_redis.hgetall(key)) for key in keys)


# -- taking ----------------------------------------------------------------------------------


def test_bulk_client_stops_at_the_reserve_and_an_interactive_one_spends_below_it(
    emulator, budget_redis, settings
):
    # Given a token of 100 requests an hour with 15 left (reserve 10%: 10 requests)
    settings.GITHUB_RATE_RESERVE_FRACTION = 0.10
    emulator.add_repo(REPO)
    emulator.set_rate_limit(builders.TOKEN, remaining=15, reset_at=in_a_while(emulator), limit=100)
    bulk = client_for_token(builders.TOKEN, keep_reserve=True)
    interactive = client_for_token(builders.TOKEN)

    def spend(client) -> int:
        sent = 0
        with pytest.raises(GitHubBudgetExhausted):
            while True:
                client.get_repository(REPO)
                sent += 1
        return sent

    # Then bulk work leaves 10, an operator's sync spends them, and GitHub refuses nothing
    assert spend(bulk) == 5
    assert spend(interactive) == 10
    assert emulator.token_state(builders.TOKEN).remaining == 0
    assert {request.status for request in emulator.requests} == {200}


def test_concurrent_workers_on_one_token_never_take_more_than_is_left(
    emulator, budget_redis, redis_url
):
    emulator.add_repo(REPO)
    emulator.set_rate_limit(builders.TOKEN, remaining=41, reset_at=in_a_while(emulator))
    client_for_token(builders.TOKEN).get_repository(REPO)  # the budget learns: 40 left
    budget = RateBudget(builders.TOKEN, reserve=0, client=redis.Redis.from_url(redis_url))
    granted: list[bool] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(20):
            refused = budget.take("core") is not None
            with lock:
                granted.append(not refused)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert granted.count(True) == 40


def test_workers_meeting_a_dry_token_first_cost_one_refused_request_between_them(
    emulator, budget_redis
):
    # Given a token GitHub knows is spent and the budget has not heard of yet
    emulator.add_repo(REPO)
    emulator.set_rate_limit(builders.TOKEN, remaining=0, reset_at=in_a_while(emulator))
    outcomes: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        try:
            client_for_token(builders.TOKEN, keep_reserve=True).get_repository(REPO)
            outcome = "served"
        except GitHubBudgetExhausted:
            outcome = "refused here"
        except GitHubPrimaryRateLimit:
            outcome = "refused by GitHub"
        with lock:
            outcomes.append(outcome)

    # When four workers send their first request at once
    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Then one asked GitHub, and the others learnt from its answer
    assert sorted(outcomes) == ["refused by GitHub"] + ["refused here"] * 3
    assert len(emulator.requests) == 1


def test_a_token_whose_answers_carry_no_rate_limit_headers_is_not_waited_for(monkeypatch):
    budget = RateBudget(builders.TOKEN, reserve=0.1, client=fakeredis.FakeRedis())
    assert budget.take("core") is None  # the first request finds out what the window holds

    budget.record_unmetered("core")  # its answer had no X-RateLimit headers

    # Then the next requests go at once instead of waiting for a window nobody will report
    def no_waiting(seconds: float) -> None:
        raise AssertionError(f"waited {seconds} s for a probe")

    monkeypatch.setattr(rate_budget.time, "sleep", no_waiting)
    assert [budget.take("core"), budget.take("core")] == [None, None]


def test_while_a_window_is_unknown_a_second_request_waits_for_the_first_ones_answer(
    monkeypatch,
):
    budget = RateBudget(builders.TOKEN, reserve=0, client=fakeredis.FakeRedis())
    reset = int(datetime.now(UTC).timestamp()) + 1800
    assert budget.take("core") is None  # the first request goes

    def answer_arrives(seconds: float) -> None:
        budget.record("core", limit=5000, remaining=0, reset=reset)

    monkeypatch.setattr(rate_budget.time, "sleep", answer_arrives)
    refusal = budget.take("core")

    assert refusal is not None and refusal.remaining == 0


# -- deferring -------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_message_on_a_token_known_dry_defers_to_the_reset_without_asking_github(
    emulator, budget_redis, stub_broker
):
    repo = builders.tracked_repo(emulator, REPO)
    reset_at = in_a_while(emulator)
    dry_token(emulator, reset_at=reset_at)

    sync_repository(repo.pk)

    assert emulator.requests == []
    (eta,) = deferred_etas(stub_broker)
    assert abs(eta - reset_at) <= timedelta(seconds=1)  # jitter 0.2 s, delays in whole ms
    repo.refresh_from_db()
    assert repo.sync_status == "rate_limited"
    assert repo.last_sync_error == f"rate limited until {eta:%Y-%m-%dT%H:%M:%SZ}"


@pytest.mark.django_db(transaction=True)
def test_fanout_on_a_dry_token_asks_nothing_and_spreads_its_deferrals_over_windows(
    emulator, budget_redis, stub_broker, settings
):
    # Given 70 repositories on a token of 100 requests an hour (90 usable by bulk syncs, 3 per
    # sync: 30 repositories a window), known to be spent until reset_at
    settings.GITHUB_RATE_RESERVE_FRACTION = 0.10
    settings.GITHUB_RATE_COST_PER_SYNC = 3
    connected_team("acme", token=builders.TOKEN, repos=70)
    reset_at = in_a_while(emulator)
    dry_token(emulator, limit=100, reset_at=reset_at)

    # When the fan-out's messages run
    for pk in TrackedRepository.objects.order_by("pk").values_list("pk", flat=True):
        sync_repository(pk)

    # Then none reached GitHub, and they come back 30, 30 and 10 to a window, 2 minutes apart
    assert emulator.requests == []
    offsets = [eta - reset_at for eta in deferred_etas(stub_broker)]
    windows = [offset // WINDOW for offset in offsets]
    assert [windows.count(w) for w in range(3)] == [30, 30, 10]
    expected = [
        WINDOW * w + timedelta(minutes=2) * k
        for w, n in [(0, 30), (1, 30), (2, 10)]
        for k in range(n)
    ]
    assert all(
        abs(got - want) <= timedelta(seconds=1)  # jitter 0.2 s, delays in whole ms
        for got, want in zip(offsets, expected, strict=True)
    )


@pytest.mark.django_db(transaction=True)
def test_interactive_sync_runs_on_the_reserve_the_daily_fanout_leaves(
    emulator, budget_redis, stub_broker, settings, days_ago
):
    # Given a token down to its reserve (20 of 100 left, reserve 20%)
    settings.GITHUB_RATE_RESERVE_FRACTION = 0.20
    emulator.generate_pulls(REPO, 5, start=days_ago(3), step=timedelta(hours=1))
    repo = builders.tracked_repo(emulator, REPO)
    emulator.set_rate_limit(builders.TOKEN, remaining=21, reset_at=in_a_while(emulator), limit=100)
    client_for_token(builders.TOKEN).get_authenticated_user()
    emulator.clear_requests()

    # When the fan-out's message and then an operator's sync run
    sync_repository(repo.pk)
    bulk_requests = len(emulator.requests)
    sync_repository_now(repo.pk)

    # Then the fan-out's waits for the reset, the operator's syncs now
    assert bulk_requests == 0
    repo.refresh_from_db()
    assert repo.sync_status == "idle" and repo.last_sync_at is not None
    assert len(emulator.requests) > 0


@pytest.mark.django_db(transaction=True)
def test_interactive_deferral_comes_back_at_the_reset_and_stays_interactive(
    emulator, budget_redis, stub_broker
):
    repo = builders.tracked_repo(emulator, REPO)
    reset_at = in_a_while(emulator)
    emulator.set_rate_limit(builders.TOKEN, remaining=0, reset_at=reset_at)

    sync_repository_now(repo.pk)

    (data,) = stub_broker.queues[f"{INTERACTIVE_QUEUE}.DQ"].queue
    message = dramatiq.Message.decode(data)
    assert message.actor_name == "sync_repository_now"
    eta = datetime.fromtimestamp(message.options["eta"] / 1000, tz=UTC)
    assert abs(eta - reset_at) <= timedelta(seconds=1)


# -- without Redis ---------------------------------------------------------------------------


class Recorded(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.mark.django_db(transaction=True)
def test_with_redis_down_syncs_run_as_before_with_one_warning(
    emulator, stub_broker, settings, days_ago
):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    pacing._redis_client.cache_clear()
    emulator.generate_pulls(REPO, 150, start=days_ago(20), step=timedelta(hours=2))
    repo = builders.tracked_repo(emulator, REPO)
    recorded = Recorded()
    logger = logging.getLogger("apps.integrations.services.rate_budget")
    logger.addHandler(recorded)
    try:
        sync_repository(repo.pk)
    finally:
        logger.removeHandler(recorded)

    repo.refresh_from_db()
    assert repo.sync_status == "idle" and repo.last_sync_error == ""
    assert PullRequest.objects.filter(tracked_repo=repo).count() == 150
    assert recorded.messages == ["github.rate_budget_unavailable"]


@pytest.mark.django_db(transaction=True)
def test_sync_repo_on_a_token_known_dry_exits_tempfail_without_asking_github(
    emulator, budget_redis
):
    builders.tracked_repo(emulator, REPO)
    reset_at = in_a_while(emulator)
    emulator.set_rate_limit(builders.TOKEN, remaining=0, reset_at=reset_at)
    with pytest.raises(GitHubPrimaryRateLimit):
        client_for_token(builders.TOKEN).get_authenticated_user()  # GitHub says: spent
    emulator.clear_requests()
    err = io.StringIO()

    with pytest.raises(SystemExit) as exited:
        call_command("sync_repo", REPO, stdout=io.StringIO(), stderr=err)

    assert exited.value.code == 75
    assert f"rate limited until {reset_at:%Y-%m-%dT%H:%M:%SZ}" in err.getvalue()
    assert emulator.requests == []


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GITHUB_RATE_RESERVE_FRACTION", "ten percent"),
        ("GITHUB_RATE_RESERVE_FRACTION", "1"),
        ("GITHUB_RATE_COST_PER_SYNC", "0"),
    ],
)
def test_a_bad_budget_setting_stops_start_up_with_one_line(name, value):

    env = {
        "PATH": "/usr/bin:/bin",
        "SECRET_KEY": "test",
        "FIELD_ENCRYPTION_KEY": TEST_ENCRYPTION_KEYS[0],
        name: value,
    }

    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 1
    assert result.stderr.startswith(f"error: {name} must be")
    assert len(result.stderr.splitlines()) == 1
