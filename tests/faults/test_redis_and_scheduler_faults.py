"""Fault injection around the broker and the scheduler: Redis killed and restarted under
waiting work, schedulers killed, stalled or doubled across a run time.

Real processes throughout: `rundramatiq` workers, `python -m scheduler`, redis-server, the
GitHub emulator. Each case ends by comparing every pull request in the database with the
emulator's truth and by checking that no repository is left in a status that is not true.
Two cases stop, should the bug they found come back, at the check it breaks with an
exception named for it (both fixed in ``apps.integrations.broker.SyncRedisBroker``).

Figures (recovery time, requests, retries) are logged at INFO by the logger of this module:
`pytest --log-cli-level=INFO` shows them.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
import redis
from dramatiq import Message

from apps.integrations.models import TrackedRepository
from devtools.localredis import start_redis_server
from devtools.processes import stop_process
from scheduler.jobs import build_trigger
from tests import builders
from tests.processes import DEADLINE, manage, process_env, start, start_worker, wait_until

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.slow,
    pytest.mark.fault,
    pytest.mark.usefixtures("process_logs"),
]

logger = logging.getLogger(__name__)

QUEUE = "dramatiq:github_sync"
DELAY_QUEUE = "dramatiq:github_sync.DQ"
# The scheduler's job runs every INTERVAL in the scheduler cases; a dead leader's lock
# lapses after LOCK_TTL (5 s: the leader loses it on its own only after a 3 s stall).
INTERVAL = timedelta(seconds=4)
LOCK_TTL_SECONDS = "5"


class DeferredSyncsStranded(AssertionError):
    """Rate-limit deferrals a worker held in memory were forgotten on a Redis restart."""


class FollowUpLost(AssertionError):
    """A sync that ended while Redis was down left no message to carry it on."""


@pytest.fixture
def durable_redis(tmp_path):
    """A redis-server of this test's own, appending every write to disk before it answers,
    so it can be killed and restarted with nothing lost."""
    server = start_redis_server(tmp_path / "redis", appendonly=True)
    yield server
    server.stop()


def scheduler(env: dict[str, str], log):
    return start([sys.executable, "-m", "scheduler"], env, log)


def logged(log, text: str) -> int:
    return log.read_text().count(text) if log.exists() else 0


def statuses(repos=None) -> dict[str, str]:
    rows = TrackedRepository.objects.all()
    if repos is not None:
        rows = rows.filter(pk__in=[repo.pk for repo in repos])
    return dict(rows.values_list("full_name", "sync_status"))


def all_idle(repos=None) -> bool:
    return set(statuses(repos).values()) == {"idle"}


def messages(client: redis.Redis, queue: str) -> list[Message]:
    """Every message Redis holds for ``queue``: waiting, or fetched and not yet acked."""
    return [Message.decode(data) for data in client.hvals(f"{queue}.msgs")]


def unacked(client: redis.Redis, queue: str) -> int:
    """How many messages of ``queue`` workers have fetched and not acked (Dramatiq keeps them
    in a set per worker and queue)."""
    return sum(client.scard(key) for key in client.scan_iter(f"dramatiq:__acks__.*.{queue}"))


def stored_messages(client: redis.Redis) -> dict[bytes, bytes]:
    """Every message body Redis holds (waiting or unacked), by its Redis message id."""
    return {**client.hgetall(f"{QUEUE}.msgs"), **client.hgetall(f"{DELAY_QUEUE}.msgs")}


def assert_truth(emulator, repos) -> None:
    for repo in repos:
        builders.assert_matches_github(emulator, repo)
    assert all_idle(repos), statuses(repos)


# How long after acme's first refused request its rate limit resets: its deferrals wait in a
# worker for this long, and the outage must fit inside it. Initech's resets a little later.
RESET_AFTER = timedelta(seconds=20)
LATER_RESET = timedelta(seconds=3)


def test_redis_killed_and_restarted_runs_every_waiting_sync(
    emulator, durable_redis, days_ago, tmp_path
):
    # Given three teams: acme's token is out of requests, so its syncs are deferred to its
    # reset and held by the worker; globex's first requests hang, so both worker threads
    # are busy and more of its syncs wait, prefetched or still in Redis; initech's sync
    # waits behind them and meets a limit that resets after acme's
    acme_token, initech_token = builders.new_token(), builders.new_token()
    emulator.add_token(acme_token, login="acme-bot")
    emulator.add_token(initech_token, login="initech-bot")
    teams = {
        "acme": (["acme/api", "acme/web"], acme_token),
        "globex": ([f"globex/app-{i}" for i in range(6)], builders.TOKEN),
        "initech": (["initech/core"], initech_token),
    }
    repos: dict[str, list[TrackedRepository]] = {}
    for slug, (names, token) in teams.items():
        for name in names:
            emulator.generate_pulls(name, 60, start=days_ago(30), step=timedelta(hours=3))
        repos[slug] = [
            builders.tracked_repo(emulator, name, team_slug=slug, token=token) for name in names
        ]
    everything = [repo for team in repos.values() for repo in team]
    for token in (acme_token, initech_token):
        emulator.set_rate_limit(token, remaining=0, reset_at=emulator.now() + timedelta(hours=1))
    limit: dict = {}
    release = threading.Event()
    held: list[int] = []

    def limit_acme_and_hold_globex(request):
        if request.token == acme_token and not limit:
            # Resets set when the limit is hit: set up front, start-ups on a busy machine
            # would eat the time the deferrals wait.
            limit.update(seq=request.seq, reset_at=emulator.now() + RESET_AFTER)
            emulator.set_rate_limit(acme_token, remaining=0, reset_at=limit["reset_at"])
            emulator.set_rate_limit(
                initech_token, remaining=0, reset_at=limit["reset_at"] + LATER_RESET
            )
        if request.token == builders.TOKEN and not release.is_set():
            held.append(request.seq)
            release.wait(DEADLINE)

    emulator.add_hook(limit_acme_and_hold_globex)
    env = process_env(
        emulator,
        REDIS_URL=durable_redis.url,
        # Dramatiq's own recovery (maintenance requeues the unacked messages of a worker
        # silent for this long) gets every chance: it would act within seconds.
        DRAMATIQ_HEARTBEAT_TIMEOUT_MS="2000",
        DRAMATIQ_MAINTENANCE_CHANCE="1000000",
        # The held requests outlast the outage instead of timing out.
        GITHUB_TIMEOUT=str(DEADLINE),
        SCHEDULER_LOCK_TTL_SECONDS=LOCK_TTL_SECONDS,
        SCHEDULER_STANDBY_RETRY_SECONDS="0.5",
    )
    client = redis.Redis.from_url(durable_redis.url)
    worker_log, scheduler_log = tmp_path / "worker.log", tmp_path / "scheduler.log"
    the_worker = start_worker(env, worker_log)
    the_scheduler = scheduler(env, scheduler_log)
    try:
        wait_until(
            lambda: logged(scheduler_log, "scheduler.leading") == 1,
            timeout=DEADLINE,
            what="the scheduler to lead",
            log=scheduler_log,
        )
        assert manage(emulator, "sync_all", REDIS_URL=durable_redis.url).returncode == 0
        # Two threads: two syncs held, two prefetched (Dramatiq prefetches twice its threads),
        # the other three in Redis; acme's two deferrals pulled into the worker's memory.
        wait_until(
            lambda: (
                len(held) == 2
                and set(statuses(repos["acme"]).values()) == {"rate_limited"}
                and unacked(client, "github_sync.DQ") == 2
                and unacked(client, "github_sync") == 4
                and client.llen(QUEUE) == 3
            ),
            timeout=DEADLINE,
            what="syncs deferred, held, prefetched and waiting",
            log=worker_log,
        )
        waiting = stored_messages(client)

        # When Redis is killed and stays down until the worker and the scheduler's leader
        # have run into it (the worker's consumer of the delay queue polls; the other, its
        # prefetch full, has nothing to ask for) ...
        killed = time.monotonic()
        durable_redis.stop(sig=signal.SIGKILL)
        wait_until(
            lambda: (
                logged(worker_log, "ConsumerThread(github_sync.DQ)] [CRITICAL]") >= 1
                and logged(scheduler_log, "scheduler.stepped_down") >= 1
            ),
            timeout=DEADLINE,
            what="every client to notice the outage",
            log=worker_log,
        )
        # ... then comes back on the same port with its append-only file
        durable_redis.start()
        restarted = time.monotonic()
        reset_in = (limit["reset_at"] - emulator.now()).total_seconds()
        assert reset_in > 0, "the deferrals came due during the outage"
        assert stored_messages(client) == waiting  # appendfsync always: nothing lost
        release.set()

        # Then the worker and the scheduler reconnect on their own: the held, prefetched and
        # waiting syncs finish, and the scheduler leads again
        wait_until(
            lambda: all_idle(repos["globex"]),
            timeout=DEADLINE,
            what="globex's syncs",
            log=worker_log,
        )
        recovered = time.monotonic()
        wait_until(
            lambda: logged(scheduler_log, "scheduler.leading") == 2,
            timeout=DEADLINE,
            what="the scheduler to lead again",
            log=scheduler_log,
        )
        releaded = time.monotonic()
        # Neither was restarted to get there
        assert the_worker.poll() is None and the_scheduler.poll() is None
        logger.info(
            "redis_restart.reconnected outage=%.1fs queued_syncs_done_after=%.1fs "
            "scheduler_leading_after=%.1fs",
            restarted - killed,
            recovered - restarted,
            releaded - restarted,
        )
        # And the deferrals run after acme's reset. Initech's limit, met after the restart,
        # resets later: once its deferral has run, the worker has moved every deferral due
        # before it to the queue (in order of due time, acking each as it goes)
        wait_until(
            lambda: all_idle(repos["initech"]),
            timeout=DEADLINE,
            what="initech's deferred sync",
            log=worker_log,
        )
        stranded = [
            message.args[0]
            for message in messages(client, DELAY_QUEUE)
            if message.args[0] in {repo.pk for repo in repos["acme"]}
        ]
        if stranded:
            raise DeferredSyncsStranded(
                f"deferrals of repositories {stranded} ({statuses(repos['acme'])}) are still "
                f"unacked in {sorted(k.decode() for k in client.keys('dramatiq:__acks__.*'))} "
                "though a later deferral ran: the worker holding them forgot them"
            )
        wait_until(lambda: all_idle(), timeout=DEADLINE, what="every sync", log=worker_log)
        done = time.monotonic()
        wait_until(
            lambda: not messages(client, QUEUE) and not messages(client, DELAY_QUEUE),
            timeout=DEADLINE,
            what="every message acked",
            log=worker_log,
        )
    finally:
        release.set()
        stop_process(the_worker)
        stop_process(the_scheduler)

    assert_truth(emulator, everything)
    # Each limited token was refused once (its rate budget told its other repositories) and
    # not used again before its reset; no PR's details were fetched twice
    resets = {"acme": limit["reset_at"], "initech": limit["reset_at"] + LATER_RESET}
    for team, token in (("acme", acme_token), ("initech", initech_token)):
        used = [request for request in emulator.requests if request.token == token]
        assert sum(request.status == 403 for request in used) == 1
        assert min(request.at for request in used if request.status != 403) >= resets[team]
    assert len(builders.detail_fetches(emulator)) == 60 * len(everything)
    acme_synced = max(
        repo.last_sync_at for repo in TrackedRepository.objects.filter(team__slug="acme")
    )
    logger.info(
        "redis_restart.recovered all_idle_after=%.1fs acme_reset_after=%.1fs "
        "acme_synced_after_its_reset=%.1fs requests=%d refused=%d retries=%d "
        "consumer_connection_errors=%d acks_retried=%d",
        done - restarted,
        reset_in,
        (acme_synced - limit["reset_at"]).total_seconds(),
        len(emulator.requests),
        sum(request.status == 403 for request in emulator.requests),
        logged(worker_log, "Retrying message"),
        logged(worker_log, "Consumer encountered a connection error"),
        logged(worker_log, "Failed to post_process_message"),
    )


# The outage outlasts a sync's end by this much at most: far beyond a client's reconnect
# retries (redis-py: 10, backing off to 1 s, about 5 s in all).
OUTAGE_AFTER_SYNC_END = 15


def test_sync_ending_while_redis_is_down_keeps_its_follow_up(
    emulator, durable_redis, days_ago, tmp_path
):
    # Given two syncs under way, their first requests held
    names = ["globex/app", "globex/web"]
    for name in names:
        emulator.generate_pulls(name, 60, start=days_ago(30), step=timedelta(hours=3))
    repos = [builders.tracked_repo(emulator, name, team_slug="globex") for name in names]
    release = threading.Event()
    held: list[int] = []

    def hold(request):
        if not release.is_set():
            held.append(request.seq)
            release.wait(DEADLINE)

    emulator.add_hook(hold)
    env = process_env(emulator, REDIS_URL=durable_redis.url, GITHUB_TIMEOUT=str(DEADLINE))
    client = redis.Redis.from_url(durable_redis.url)
    log = tmp_path / "worker.log"
    the_worker = start_worker(env, log)
    try:
        assert manage(emulator, "sync_all", REDIS_URL=durable_redis.url).returncode == 0
        wait_until(lambda: len(held) == 2, timeout=DEADLINE, what="both syncs held", log=log)

        # When Redis goes down, and meanwhile both syncs meet a rate limit: each must send
        # its deferral (to the token's reset) while Redis is unreachable
        durable_redis.stop(sig=signal.SIGKILL)
        emulator.set_rate_limit(
            builders.TOKEN, remaining=0, reset_at=emulator.now() + timedelta(seconds=5)
        )
        release.set()
        wait_until(
            lambda: set(statuses().values()) <= {"rate_limited", "queued"},
            timeout=DEADLINE,
            what="both syncs to end",
            log=log,
        )
        ended = time.monotonic()
        # Redis stays down until the worker has given up sending (it then waits to ack the
        # messages) or, were it waiting for Redis instead, well past its reconnect retries
        wait_until(
            lambda: (
                logged(log, "Failed to post_process_message") >= 2
                or time.monotonic() > ended + OUTAGE_AFTER_SYNC_END
            ),
            timeout=DEADLINE,
            what="the worker to give up or keep waiting",
            log=log,
        )
        durable_redis.start()

        # Then, once the messages that ran are acked, every repository not idle has a
        # message in Redis that will sync it
        wait_until(
            lambda: not messages(client, QUEUE),
            timeout=DEADLINE,
            what="the held messages to be acked",
            log=log,
        )
        carried = {
            message.args[0]
            for message in messages(client, QUEUE) + messages(client, DELAY_QUEUE)
            if message.actor_name == "sync_repository"
        }
        lost = {
            name: status
            for name, status in statuses().items()
            if status != "idle" and TrackedRepository.objects.get(full_name=name).pk not in carried
        }
        if lost:
            errors = dict(TrackedRepository.objects.values_list("full_name", "last_sync_error"))
            raise FollowUpLost(f"no message will ever sync {lost}: {errors}")
        wait_until(lambda: all_idle(), timeout=DEADLINE, what="both syncs", log=log)
    finally:
        release.set()
        stop_process(the_worker)

    assert_truth(emulator, repos)


def fan_outs(client: redis.Redis) -> list[datetime]:
    """When each `sync_all_repositories` message waiting in Redis was sent, in order."""
    return sorted(
        datetime.fromtimestamp(message.message_timestamp / 1000, UTC)
        for message in messages(client, QUEUE)
        if message.actor_name == "sync_all_repositories"
    )


def one_fan_out_per_run_time(sent: list[datetime]) -> bool:
    """Between any two fan-outs lies a run time: no run time was enqueued twice, whether by
    two schedulers or by a catch-up and the run it caught up."""
    trigger = build_trigger(INTERVAL)
    return all(
        trigger.get_next_fire_time(None, earlier + timedelta(microseconds=1)) <= later
        for earlier, later in zip(sent, sent[1:], strict=False)
    )


def scheduler_env(emulator, redis_url: str) -> dict[str, str]:
    return process_env(
        emulator,
        REDIS_URL=redis_url,
        DJANGO_SETTINGS_MODULE="tests.faults.settings_interval_schedule",
        SYNC_INTERVAL_SECONDS=str(INTERVAL.total_seconds()),
        SCHEDULER_LOCK_TTL_SECONDS=LOCK_TTL_SECONDS,
        SCHEDULER_STANDBY_RETRY_SECONDS="0.5",
    )


def run_times(after: datetime, until: datetime) -> list[datetime]:
    """The job's run times in (after, until]."""
    trigger = build_trigger(INTERVAL)
    times = []
    at = trigger.get_next_fire_time(None, after + timedelta(microseconds=1))
    while at <= until:
        times.append(at)
        at = trigger.get_next_fire_time(None, at + timedelta(microseconds=1))
    return times


def tracked_repos(emulator, days_ago) -> list[TrackedRepository]:
    names = ["acme/api", "acme/web"]
    for name in names:
        emulator.generate_pulls(name, 40, start=days_ago(20), step=timedelta(hours=3))
    return [builders.tracked_repo(emulator, name) for name in names]


def sync_with_a_worker(emulator, redis_url: str, tmp_path) -> None:
    """Let a worker run every fan-out waiting in Redis until every repository is synced."""
    process = start_worker(process_env(emulator, REDIS_URL=redis_url), tmp_path / "worker.log")
    try:
        wait_until(
            lambda: (
                all_idle()
                and not TrackedRepository.objects.filter(last_sync_at__isnull=True).exists()
            ),
            timeout=DEADLINE,
            what="every repository synced",
            log=tmp_path / "worker.log",
        )
    finally:
        stop_process(process)


def test_scheduler_killed_across_a_run_time_catches_it_up_once_on_start(
    emulator, redis_url, days_ago, tmp_path
):
    # Given tracked repositories and a scheduler that took the lead (a first start: it
    # records a baseline and enqueues nothing)
    repos = tracked_repos(emulator, days_ago)
    env = scheduler_env(emulator, redis_url)
    client = redis.Redis.from_url(redis_url)
    trigger = build_trigger(INTERVAL)
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    first = scheduler(env, first_log)
    second = None
    try:
        wait_until(
            lambda: logged(first_log, "scheduler.baseline_recorded") == 1,
            timeout=DEADLINE,
            what="the first scheduler's baseline",
            log=first_log,
        )

        # When it is killed and a run time passes with no scheduler up
        stop_process(first, sig=signal.SIGKILL)
        sent_before = fan_outs(client)  # none, unless a run time fell before the kill
        missed = trigger.get_next_fire_time(None, datetime.now(UTC))
        wait_until(
            lambda: datetime.now(UTC) > missed,
            timeout=DEADLINE,
            what="a run time with no scheduler up",
        )
        # ... and a scheduler starts again (it waits for the dead one's lock to lapse, while
        # more run times may pass)
        second = scheduler(env, second_log)
        wait_until(
            lambda: len(fan_outs(client)) > len(sent_before),
            timeout=DEADLINE,
            what="the catch-up",
            log=second_log,
        )
        caught_up = fan_outs(client)[len(sent_before)]
        next_run = trigger.get_next_fire_time(None, caught_up + timedelta(microseconds=1))
        # A second catch-up would come before the next scheduled run
        wait_until(
            lambda: fan_outs(client)[-1] >= next_run,
            timeout=DEADLINE,
            what="the next scheduled run",
            log=second_log,
        )
    finally:
        stop_process(first, sig=signal.SIGKILL)
        if second is not None:
            stop_process(second)

    # Then the missed run times were caught up by one fan-out, and only one
    sent = fan_outs(client)
    assert [at for at in sent if missed < at < next_run] == [caught_up]
    assert one_fan_out_per_run_time(sent)
    assert second.returncode == 0
    # And a worker running the fan-outs brings every repository to GitHub's truth
    sync_with_a_worker(emulator, redis_url, tmp_path)
    assert_truth(emulator, repos)
    logger.info(
        "scheduler_killed.caught_up missed_run_times=%d catch_up_after=%.1fs fan_outs=%d "
        "requests=%d",
        1 + len(run_times(missed, caught_up)),
        (caught_up - missed).total_seconds(),
        len(sent),
        len(emulator.requests),
    )


def test_two_schedulers_across_run_times_enqueue_one_fan_out_per_run_time(
    emulator, redis_url, days_ago, tmp_path
):
    # Given two schedulers started together: one leads, the other stands by
    repos = tracked_repos(emulator, days_ago)
    env = scheduler_env(emulator, redis_url)
    client = redis.Redis.from_url(redis_url)
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    processes = [scheduler(env, log) for log in logs]
    stopped = False
    try:
        wait_until(
            lambda: (
                sum(logged(log, "scheduler.leading") for log in logs) == 1
                and sum(logged(log, "scheduler.standing_by") for log in logs) == 1
            ),
            timeout=DEADLINE,
            what="one leader and one standby",
            log=logs[0],
        )
        lead = 0 if logged(logs[0], "scheduler.leading") else 1
        leader, leader_log = processes[lead], logs[lead]
        successor_log = logs[1 - lead]

        # When a run time passes with both up ...
        wait_until(
            lambda: fan_outs(client), timeout=DEADLINE, what="a first fan-out", log=leader_log
        )
        # ... then the leader stalls across the next one, long enough for its lock to lapse
        # and the other to take over ...
        os.killpg(leader.pid, signal.SIGSTOP)
        stopped = True
        stalled_at = datetime.now(UTC)
        wait_until(
            lambda: logged(successor_log, "scheduler.leading") == 1,
            timeout=DEADLINE,
            what="the other scheduler to take over",
            log=successor_log,
        )
        took_over = datetime.now(UTC)
        wait_until(
            lambda: fan_outs(client)[-1] > stalled_at,
            timeout=DEADLINE,
            what="the successor's first fan-out",
            log=successor_log,
        )
        # ... and resumes with that run time due on its schedule
        os.killpg(leader.pid, signal.SIGCONT)
        stopped = False
        wait_until(
            lambda: logged(leader_log, "scheduler.stepped_down") == 1,
            timeout=DEADLINE,
            what="the old leader to step down",
            log=leader_log,
        )
        stepped_down = datetime.now(UTC)
        wait_until(
            lambda: fan_outs(client)[-1] > stepped_down,
            timeout=DEADLINE,
            what="a fan-out after the old leader stepped down",
            log=successor_log,
        )
    finally:
        if stopped:
            os.killpg(leader.pid, signal.SIGCONT)
        for process in processes:
            stop_process(process)

    # Then every run time was enqueued by one scheduler, never by both
    sent = fan_outs(client)
    assert one_fan_out_per_run_time(sent)
    assert logged(leader_log, "scheduler.not_leader") + logged(leader_log, "lock_lost") >= 1
    # And a worker running the fan-outs brings every repository to GitHub's truth
    sync_with_a_worker(emulator, redis_url, tmp_path)
    assert_truth(emulator, repos)
    logger.info(
        "two_schedulers.one_fan_out_per_run_time fan_outs=%d run_times=%d "
        "takeover_after_stall=%.1fs requests=%d",
        len(sent),
        len(run_times(sent[0], sent[-1])) + 1,
        (took_over - stalled_at).total_seconds(),
        len(emulator.requests),
    )
