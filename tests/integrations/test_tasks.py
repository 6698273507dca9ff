"""Actors and the outcome middleware on a StubBroker with a real Worker (threads)."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import dramatiq
import pytest
import redis
from dramatiq.middleware import MiddlewareError

from apps.integrations import broker as broker_module
from apps.integrations.models import IntegrationCredential, PullRequest, TrackedRepository
from apps.integrations.services.sync_lease import lease_acquire
from apps.integrations.tasks import (
    QUEUE,
    EnqueueFailed,
    enqueue_all_repository_syncs,
    sync_all_repositories,
    sync_repository,
)
from devtools.localredis import start_redis_server
from tests import builders
from tests.builders import connected_team
from tests.processes import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

REPO = "acme/widgets"


def join(broker, timeout_ms: int = 30_000) -> None:
    broker.join(QUEUE, timeout=timeout_ms, fail_fast=False)


def reload(repo: TrackedRepository) -> TrackedRepository:
    repo.refresh_from_db()
    return repo


@pytest.fixture
def repo(emulator, days_ago):
    emulator.generate_pulls(REPO, 150, start=days_ago(20), step=timedelta(hours=2))
    return builders.tracked_repo(emulator, REPO)


def listings(emulator) -> int:
    return emulator.count_requests(path_contains="/issues")


# -- sync_repository -------------------------------------------------------------------------


def test_repository_shows_syncing_while_its_sync_runs(stub_broker, stub_worker, repo, emulator):
    seen = []
    emulator.add_hook(
        lambda req: seen.append(
            TrackedRepository.objects.values_list("sync_status", flat=True).get(pk=repo.pk)
        )
    )

    sync_repository.send(repo.pk)
    join(stub_broker)

    assert seen and set(seen) == {"syncing"}


def test_rate_limited_sync_resumes_after_the_reset_without_fetching_anything_twice(
    stub_broker, stub_worker, repo, emulator
):
    # Page 1's details are fetched; page 2's GraphQL query is refused until the reset. When
    # the reset comes does not matter: the deferral waits for it, however slow this machine.
    reset_at = (emulator.now() + timedelta(seconds=2)).replace(microsecond=0)
    emulator.set_graphql_rate_limit(builders.TOKEN, remaining=1, reset_at=reset_at)

    sync_repository.send(repo.pk)
    join(stub_broker)

    repo = reload(repo)
    assert repo.sync_status == "idle" and repo.last_sync_error == ""
    assert PullRequest.objects.filter(tracked_repo=repo).count() == 150
    assert any(r.status == 200 and r.at >= reset_at for r in emulator.requests)
    # The deferred message continued the pass: each PR's details were fetched once.
    fetched = builders.detail_fetches(emulator)
    assert len(fetched) == len(set(fetched)) == 150


def test_rate_limit_defers_a_fresh_message_to_githubs_reset(stub_broker, repo, emulator):
    reset_at = (emulator.now() + timedelta(hours=1)).replace(microsecond=0)
    emulator.set_rate_limit(builders.TOKEN, remaining=0, reset_at=reset_at)

    sync_repository(repo.pk)

    (deferred,) = map(dramatiq.Message.decode, stub_broker.queues[f"{QUEUE}.DQ"].queue)
    eta = datetime.fromtimestamp(deferred.options["eta"] / 1000, tz=UTC)
    assert reset_at <= eta <= reset_at + timedelta(seconds=1)  # jitter is 0.2 s in tests
    assert emulator.count_requests() == 1


def test_full_resync_deferred_before_its_first_page_still_runs_in_full(
    stub_broker, repo, emulator, days_ago
):
    # Given a repository synced before, and a full resync that GitHub refuses at once
    sync_repository(repo.pk)
    stub_broker.flush_all()
    emulator.set_rate_limit(
        builders.TOKEN, remaining=0, reset_at=emulator.now() + timedelta(hours=1)
    )

    sync_repository(repo.pk, full=True)

    # Then the deferred message is still the full resync it stood for
    (deferred,) = map(dramatiq.Message.decode, stub_broker.queues[f"{QUEUE}.DQ"].queue)
    assert deferred.kwargs["full"] is True
    emulator.set_rate_limit(builders.TOKEN, remaining=5000)
    emulator.clear_requests()
    sync_repository(*deferred.args, **deferred.kwargs)
    assert builders.detail_fetches(emulator) == []  # nothing changed: no details
    listed_since = {r.query.get("since") for r in emulator.requests if "/issues" in r.path}
    assert min(listed_since) <= days_ago(89).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_rate_limit_deferral_does_not_consume_the_retry_budget(stub_broker, repo, emulator):
    emulator.set_rate_limit(
        builders.TOKEN, remaining=0, reset_at=emulator.now() + timedelta(hours=1)
    )

    sync_repository(repo.pk)

    (deferred,) = stub_broker.queues[f"{QUEUE}.DQ"].queue
    message = dramatiq.Message.decode(deferred)
    assert "retries" not in message.options


@pytest.mark.parametrize("status", [403, 429])
def test_secondary_rate_limit_defers_by_retry_after(stub_broker, repo, emulator, status):
    emulator.secondary_limit_next(status=status, retry_after=7)

    before = time.time()
    sync_repository(repo.pk)
    after = time.time()

    (deferred,) = stub_broker.queues[f"{QUEUE}.DQ"].queue
    message = dramatiq.Message.decode(deferred)
    # Retry-After counts from GitHub's answer, which came between before and after.
    jitter = 0.2  # GITHUB_RATE_LIMIT_JITTER_SECONDS in tests
    assert before + 7 <= message.options["eta"] / 1000 <= after + 7 + jitter + 0.01
    assert message.kwargs["secondary_limits"] == 1


def test_secondary_rate_limit_without_retry_after_waits_a_minute_then_longer(
    stub_broker, repo, emulator
):
    emulator.secondary_limit_next(status=403, retry_after=None, count=2)

    calls = []
    for secondary_limits in (0, 1):
        before = time.time()
        sync_repository(repo.pk, secondary_limits=secondary_limits)
        calls.append((before, time.time()))

    first, second = (
        m.options["eta"] / 1000
        for m in map(dramatiq.Message.decode, stub_broker.queues[f"{QUEUE}.DQ"].queue)
    )
    (before_1, after_1), (before_2, after_2) = calls
    assert before_1 + 60 <= first <= after_1 + 60 + 0.21
    assert before_2 + 120 <= second <= after_2 + 120 + 0.21


def test_revoked_token_disconnects_without_retrying(stub_broker, stub_worker, repo, emulator):
    emulator.revoke_token(builders.TOKEN)

    sync_repository.send(repo.pk)
    join(stub_broker)

    repo = reload(repo)
    assert emulator.count_requests() == 1
    assert not IntegrationCredential.objects.exists()
    assert repo.sync_status == "error" and "rejected the credentials" in repo.last_sync_error
    assert not repo.integration.is_connected


@pytest.mark.parametrize("change", ["inactive", "disconnected", "missing"])
def test_skipped_message_changes_nothing(stub_broker, stub_worker, repo, emulator, change):
    TrackedRepository.objects.filter(pk=repo.pk).update(
        sync_status="error", last_sync_error="earlier problem"
    )
    target = repo.pk
    if change == "inactive":
        TrackedRepository.objects.filter(pk=repo.pk).update(is_active=False)
    elif change == "disconnected":
        IntegrationCredential.objects.all().delete()
    else:
        target = repo.pk + 1000

    sync_repository.send(target)
    join(stub_broker)

    assert emulator.requests == []
    assert TrackedRepository.objects.values_list("sync_status", "last_sync_error").get(
        pk=repo.pk
    ) == ("error", "earlier problem")


class CountFinished(dramatiq.Middleware):
    """Counts messages a worker has finished processing (any outcome)."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def after_process_message(self, broker, message, *, result=None, exception=None):
        with self._lock:
            self.count += 1


def after_sending(message: dramatiq.Message) -> None:
    """Return once the wall clock is past ``message``'s timestamp (kept in milliseconds), so a
    lease taken from now on is unambiguously younger than the message."""
    wait_until(
        lambda: time.time() * 1000 > message.message_timestamp + 2,
        timeout=5,
        what="the clock to pass the message's timestamp",
    )


def test_five_messages_for_one_repository_cost_one_sync(stub_broker, repo, emulator, settings):
    # Given five requests for one repository, all made before any sync starts
    messages = [sync_repository.send(repo.pk) for _ in range(5)]
    after_sending(messages[-1])
    # ... and a sync that, once it starts, holds its lease until the four others are processed
    settings.GITHUB_TIMEOUT = 120
    finished = CountFinished()
    stub_broker.add_middleware(finished)
    emulator.add_hook(
        lambda request: wait_until(
            lambda: finished.count >= 4, timeout=60, what="the four other messages"
        )
    )

    worker = dramatiq.Worker(stub_broker, worker_timeout=50, worker_threads=5)
    worker.start()
    try:
        join(stub_broker)
    finally:
        worker.stop()

    # Then the four were dropped and one sync did the work
    assert finished.count == 5
    assert len(builders.detail_fetches(emulator)) == 150
    assert listings(emulator) == 3  # one full sync: 100 + 50 PRs, then the watermark page
    assert reload(repo).sync_status == "idle"


def test_message_sent_while_a_sync_runs_waits_for_that_sync_to_end(
    stub_broker, stub_worker, repo, emulator, settings
):
    # The running sync may already have listed past changes made after it started, so a
    # request made during it must run after it: no request to GitHub while it holds the lease.
    settings.SYNC_LEASE_SECONDS = 2
    running = lease_acquire(tracked_repo=repo)
    owners_seen = []
    emulator.add_hook(
        lambda request: owners_seen.append(
            TrackedRepository.objects.values_list("sync_lease_owner", flat=True).get(pk=repo.pk)
        )
    )

    sync_repository.send(repo.pk)
    join(stub_broker)

    assert running is not None
    assert owners_seen and running.owner not in owners_seen
    assert PullRequest.objects.filter(tracked_repo=repo).count() == 150
    assert reload(repo).sync_status == "idle"


def test_message_sent_before_a_running_sync_started_is_dropped(stub_broker, repo, emulator):
    # The running sync started after the request, so it sees everything the request wanted.
    after_sending(sync_repository.send(repo.pk))
    running = lease_acquire(tracked_repo=repo)
    worker = dramatiq.Worker(stub_broker, worker_timeout=50, worker_threads=1)
    worker.start()
    try:
        join(stub_broker)
    finally:
        worker.stop()

    assert running is not None
    assert emulator.requests == []
    assert stub_broker.queues[f"{QUEUE}.DQ"].qsize() == 0


def test_redelivered_message_whose_own_sync_stalled_waits_instead_of_being_dropped(
    stub_broker, repo, emulator
):
    # Given a message whose sync took the lease (after the message was sent) and then went
    # silent on another machine, so the broker redelivers the same message
    message = sync_repository.send(repo.pk)
    after_sending(message)
    stalled = lease_acquire(tracked_repo=repo, owner="host-a/0:1:x", request_id=message.message_id)
    sent: list[tuple[dramatiq.Message, int | None]] = []
    stub_broker.add_middleware(RecordEnqueued(sent))
    worker = dramatiq.Worker(stub_broker, worker_timeout=50, worker_threads=1)
    worker.start()
    try:
        wait_until(lambda: sent, timeout=60, what="the message to be sent again")
    finally:
        worker.stop()

    # Then it is not dropped as "covered by a newer sync": the same request comes back once
    # the stalled sync's lease lapses
    (again, delay), *_ = sent
    assert stalled is not None and emulator.requests == []
    assert again.kwargs["request_id"] == message.message_id
    assert again.message_timestamp + delay >= stalled_expiry_ms(repo)


class RecordEnqueued(dramatiq.Middleware):
    def __init__(self, sent: list) -> None:
        self.sent = sent

    def after_enqueue(self, broker, message, delay):
        self.sent.append((message, delay))


def stalled_expiry_ms(repo: TrackedRepository) -> int:
    expires = TrackedRepository.objects.values_list("sync_lease_expires_at", flat=True).get(
        pk=repo.pk
    )
    return int(expires.timestamp() * 1000)


def test_message_newer_than_nothing_running_is_not_dropped(stub_broker, stub_worker, repo):
    held = lease_acquire(tracked_repo=repo)
    held.release()

    sync_repository.send(repo.pk)
    join(stub_broker)

    assert PullRequest.objects.filter(tracked_repo=repo).count() == 150


def test_large_backfill_continues_in_new_messages(
    stub_broker, stub_worker, repo, emulator, settings
):
    settings.SYNC_MESSAGE_TIME_BUDGET_SECONDS = 0  # one page per message

    sync_repository.send(repo.pk)
    join(stub_broker)

    repo = reload(repo)
    assert repo.sync_status == "idle" and repo.sync_checkpoint is None
    assert PullRequest.objects.filter(tracked_repo=repo).count() == 150
    assert listings(emulator) == 3  # as one uninterrupted sync: 100 + 50, watermark page


def test_dramatiq_rate_limit_exceeded_is_not_a_github_rate_limit(stub_broker, stub_worker, repo):
    @dramatiq.actor(queue_name=QUEUE, records_sync_outcome=True, max_retries=0)
    def limited_by_dramatiq(tracked_repo_id: int) -> None:
        raise dramatiq.RateLimitExceeded("concurrency limit")

    limited_by_dramatiq.send(repo.pk)
    join(stub_broker)

    repo = reload(repo)
    assert repo.sync_status == "error" and "RateLimitExceeded" in repo.last_sync_error
    assert not repo.last_sync_error.startswith("rate limited until")


# -- sync_all_repositories -------------------------------------------------------------------


def test_fanout_enqueues_active_connected_repositories_and_marks_them_queued(stub_broker, emulator):
    active = [builders.tracked_repo(emulator, f"acme/r{i}") for i in range(3)]
    inactive = builders.tracked_repo(emulator, "acme/old")
    TrackedRepository.objects.filter(pk=inactive.pk).update(is_active=False)
    other = builders.tracked_repo(emulator, "globex/app", team_slug="globex")
    IntegrationCredential.objects.filter(integration=other.integration).delete()

    count = enqueue_all_repository_syncs()

    queued = [dramatiq.Message.decode(m) for m in stub_broker.queues[QUEUE].queue]
    assert count == 3
    assert sorted(m.args[0] for m in queued) == sorted(r.pk for r in active)
    assert {reload(r).sync_status for r in active} == {"queued"}
    assert reload(inactive).sync_status == "idle" and reload(other).sync_status == "idle"


def test_fanout_then_workers_sync_every_repository(stub_broker, stub_worker, emulator, days_ago):
    names = ["acme/a", "acme/b", "acme/c"]
    for name in names:
        emulator.generate_pulls(name, 20, start=days_ago(3), step=timedelta(minutes=9))
        builders.tracked_repo(emulator, name)

    sync_all_repositories.send()
    join(stub_broker)

    assert PullRequest.objects.count() == 60
    assert set(TrackedRepository.objects.values_list("sync_status", flat=True)) == {"idle"}


UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"  # nothing listens there


class QueueRefuses(MiddlewareError, redis.ConnectionError):
    """What an unreachable Redis raises, in a form the broker lets out of a before-hook."""


class RefuseNthSync(dramatiq.Middleware):
    """The queue refuses the ``nth`` sync message (once), as a Redis lost mid-fan-out would;
    records the repositories of the sync messages that did get in."""

    def __init__(self, nth: int) -> None:
        self.nth = nth
        self.seen = 0
        self.sent: list[int] = []

    def before_enqueue(self, broker, message, delay):
        if message.actor_name == "sync_repository":
            self.seen += 1
            if self.seen == self.nth:
                raise QueueRefuses("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    def after_enqueue(self, broker, message, delay):
        if message.actor_name == "sync_repository":
            self.sent.append(message.args[0])


class StopRedisAfter(dramatiq.Middleware):
    """Stops ``server`` once ``count`` messages are in it, noting whose they were."""

    def __init__(self, server, count: int) -> None:
        self.server = server
        self.count = count
        self.seen = 0
        self.in_redis: list[int] = []

    def after_enqueue(self, broker, message, delay):
        self.seen += 1
        if self.seen == self.count:
            bodies = broker.client.hvals(f"{broker.namespace}:{QUEUE}.msgs")
            self.in_redis = [dramatiq.Message.decode(body).args[0] for body in bodies]
            self.server.stop()


class OnEnqueue(dramatiq.Middleware):
    """Runs ``action(repo_id)`` as the sync message of ``repo_id`` enters the queue: a worker
    that gets to the repository before the sender has marked it."""

    def __init__(self, repo_id: int, action) -> None:
        self.repo_id = repo_id
        self.action = action

    def after_enqueue(self, broker, message, delay):
        if message.actor_name == "sync_repository" and message.args[0] == self.repo_id:
            self.action(self.repo_id)


def statuses() -> dict[int, str]:
    return dict(TrackedRepository.objects.values_list("pk", "sync_status"))


def test_fanout_with_redis_unreachable_marks_nothing_queued(use_redis_broker):
    # Given three syncable repositories and a REDIS_URL nothing answers at
    connected_team("acme", repos=3)
    use_redis_broker(UNREACHABLE_REDIS)

    # When the fan-out runs
    with pytest.raises(EnqueueFailed) as failed:
        enqueue_all_repository_syncs()

    # Then it says nothing was enqueued, and no repository claims a message is waiting
    assert (failed.value.enqueued, failed.value.total) == (0, 3)
    assert set(statuses().values()) == {"idle"}


def test_fanout_that_loses_redis_halfway_marks_queued_only_what_reached_redis(
    use_redis_broker, tmp_path, monkeypatch
):
    # Given five repositories, a fan-out pipelining two messages at a time, and a Redis that
    # goes away once the first two messages are in it
    connected_team("acme", repos=5)
    monkeypatch.setattr(broker_module, "CHUNK", 2)
    server = start_redis_server(tmp_path / "redis")
    try:
        stop = StopRedisAfter(server, count=2)
        use_redis_broker(server.url).add_middleware(stop)

        # When the fan-out runs
        with pytest.raises(EnqueueFailed) as failed:
            enqueue_all_repository_syncs()
    finally:
        server.stop()

    # Then the two repositories whose messages reached Redis show queued, and only those;
    # the others keep their status, with the fan-out's request still noted for the sweep
    assert failed.value.enqueued == 2
    queued = {pk for pk, status in statuses().items() if status == "queued"}
    assert queued == set(stop.in_redis) and len(queued) == 2
    rest = TrackedRepository.objects.exclude(pk__in=queued)
    assert {r.sync_status for r in rest} == {"idle"}
    assert all(r.sync_requested_at is not None for r in rest)


def test_fanout_that_failed_halfway_is_retried_without_sending_anything_twice(
    stub_broker, stub_worker, emulator, monkeypatch
):
    # Given five repositories, a fan-out pipelining two messages at a time, and a queue that
    # refuses its third message once
    repos = [builders.tracked_repo(emulator, f"acme/r{i}") for i in range(5)]
    monkeypatch.setattr(broker_module, "CHUNK", 2)
    refuse = RefuseNthSync(3)
    stub_broker.add_middleware(refuse)

    # When the fan-out runs (retries a few milliseconds apart instead of 15 s)
    sync_all_repositories.send_with_options(min_backoff=1, max_backoff=10)
    join(stub_broker)

    # Then its retry sent the three the failed attempt did not, and no repository got two
    assert sorted(refuse.sent) == sorted(r.pk for r in repos)
    assert set(statuses().values()) == {"idle"}


def test_fanout_leaves_a_repository_synced_before_it_was_marked_idle(stub_broker, emulator):
    # Given three repositories, and a worker that syncs the second one to the end as soon as
    # its message is in the queue, before the fan-out marks it
    repos = [builders.tracked_repo(emulator, f"acme/r{i}") for i in range(3)]
    synced = repos[1]
    stub_broker.add_middleware(OnEnqueue(synced.pk, lambda pk: sync_repository.fn(pk)))

    # When the fan-out runs
    enqueue_all_repository_syncs()

    # Then that repository keeps the outcome of its sync; a late "queued" would be false
    assert reload(synced).sync_status == "idle" and reload(synced).last_sync_at is not None
    assert [reload(r).sync_status for r in (repos[0], repos[2])] == ["queued", "queued"]


def test_fanout_leaves_a_repository_whose_sync_holds_the_lease_to_that_sync(stub_broker, emulator):
    # Given three repositories, and a worker that takes the second one's lease as soon as its
    # message is in the queue, before the fan-out marks it
    repos = [builders.tracked_repo(emulator, f"acme/r{i}") for i in range(3)]
    running = repos[1]
    stub_broker.add_middleware(
        OnEnqueue(running.pk, lambda pk: lease_acquire(tracked_repo=TrackedRepository(pk=pk)))
    )

    # When the fan-out runs
    enqueue_all_repository_syncs()

    # Then the fan-out does not mark it: the running sync records its own outcome
    assert reload(running).sync_status == "idle"
    assert [reload(r).sync_status for r in (repos[0], repos[2])] == ["queued", "queued"]
