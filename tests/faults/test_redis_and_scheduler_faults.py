"""Fault injection around the scheduler: schedulers killed, stalled or doubled across a run
time.

Real processes throughout: `rundramatiq` workers, `python -m scheduler`, redis-server, the
GitHub emulator. Each case ends by comparing every pull request in the database with the
emulator's truth and by checking that no repository is left in a status that is not true.
Figures are logged at INFO by the logger of this module:
`pytest --log-cli-level=INFO` shows them.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from datetime import UTC, datetime, timedelta

import pytest
import redis
from dramatiq import Message

from apps.integrations.models import TrackedRepository
from devtools.processes import stop_process
from scheduler.jobs import build_trigger
from tests import builders
from tests.processes import process_env, start, wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow, pytest.mark.fault]

logger = logging.getLogger(__name__)

DEADLINE = 120  # seconds: any wait below, on a loaded 2-core machine
QUEUE = "dramatiq:github_sync"
# The scheduler's job runs every INTERVAL in the scheduler cases; a dead leader's lock
# lapses after LOCK_TTL (5 s: the leader loses it on its own only after a 3 s stall).
INTERVAL = timedelta(seconds=4)
LOCK_TTL_SECONDS = "5"


@pytest.fixture(autouse=True)
def log_tails(tmp_path):
    """A failure report ends with each process log's tail (pytest shows teardown output of
    failed tests only)."""
    yield
    for log in sorted(tmp_path.glob("*.log")):
        sys.stdout.write(f"\n--- end of {log.name} ---\n{log.read_text()[-3000:]}\n")


def worker(env: dict[str, str], log):
    return start(
        [sys.executable, "manage.py", "rundramatiq", "--processes", "1", "--threads", "2"],
        env,
        log,
    )


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


def assert_truth(emulator, repos) -> None:
    for repo in repos:
        builders.assert_matches_github(emulator, repo)
    assert all_idle(repos), statuses(repos)


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
    process = worker(process_env(emulator, REDIS_URL=redis_url), tmp_path / "worker.log")
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
    logger.info(
        "scheduler_killed.caught_up missed_run_times=%d catch_up_after=%.1fs fan_outs=%d",
        1 + len(run_times(missed, caught_up)),
        (caught_up - missed).total_seconds(),
        len(sent),
    )
    # And a worker running the fan-outs brings every repository to GitHub's truth
    sync_with_a_worker(emulator, redis_url, tmp_path)
    assert_truth(emulator, repos)


def test_two_schedulers_across_run_times_enqueue_one_fan_out_per_run_time(
    emulator, redis_url, days_ago, tmp_path
):
    # Given two schedulers started together: one leads, the other stands by
    repos = tracked_repos(emulator, days_ago)
    env = scheduler_env(emulator, redis_url)
    client = redis.Redis.from_url(redis_url)
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    processes = [scheduler(env, log) for log in logs]
    stalled = None
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
        stalled = datetime.now(UTC)
        wait_until(
            lambda: (
                logged(successor_log, "scheduler.leading") == 1 and fan_outs(client)[-1] > stalled
            ),
            timeout=DEADLINE,
            what="the successor's first fan-out",
            log=successor_log,
        )
        # ... and resumes with that run time due on its schedule
        os.killpg(leader.pid, signal.SIGCONT)
        stalled = None
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
        if stalled is not None:
            os.killpg(leader.pid, signal.SIGCONT)
        for process in processes:
            stop_process(process)

    # Then every run time was enqueued by one scheduler, never by both
    sent = fan_outs(client)
    assert one_fan_out_per_run_time(sent)
    assert logged(leader_log, "scheduler.not_leader") + logged(leader_log, "lock_lost") >= 1
    logger.info(
        "two_schedulers.one_fan_out_per_run_time fan_outs=%d run_times=%d",
        len(sent),
        len(run_times(sent[0], sent[-1])) + 1,
    )
    # And a worker running the fan-outs brings every repository to GitHub's truth
    sync_with_a_worker(emulator, redis_url, tmp_path)
    assert_truth(emulator, repos)
