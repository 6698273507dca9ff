"""`python -m scheduler` as a process, against a real redis-server."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from dramatiq import Message

from scheduler.jobs import LAST_RUN_KEY
from scheduler.leader import LEADER_KEY
from tformance.test_settings import TEST_ENCRYPTION_KEYS

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
# Seconds any start-up, log line or exit may take: a Django start-up alone can take several
# on a loaded 2-core machine. Only a failing test waits this long.
DEADLINE = 120


def scheduler_env(redis_url: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.scheduler.settings_e2e",
        "SECRET_KEY": "x",
        "FIELD_ENCRYPTION_KEY": TEST_ENCRYPTION_KEYS[0],
        "REDIS_URL": redis_url,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "DEBUG": "",
    }
    env.update(extra)
    return env


def run_scheduler(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scheduler", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )


class SchedulerProcess:
    """A long-running scheduler whose stderr log lines can be waited for."""

    def __init__(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "scheduler"],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._unread: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)
            self._unread.put(line)

    def wait_for(self, text: str, timeout: float = DEADLINE) -> str:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"no log line with {text!r}; got:\n{''.join(self.lines)}")
            try:
                line = self._unread.get(timeout=remaining)
            except queue.Empty:
                continue
            if text in line:
                return line

    def logged(self, text: str) -> bool:
        return any(text in line for line in self.lines)


@contextmanager
def scheduler_process(env: dict[str, str]) -> Iterator[SchedulerProcess]:
    scheduler = SchedulerProcess(env)
    try:
        yield scheduler
    finally:
        if scheduler.process.poll() is None:
            scheduler.process.kill()
        scheduler.process.wait(timeout=DEADLINE)


def enqueued_messages(client: redis.Redis) -> list[Message]:
    # RedisBroker keeps each message body in the "<queue>.msgs" hash, its id in the list.
    assert client.llen("dramatiq:default") == client.hlen("dramatiq:default.msgs")
    return [Message.decode(data) for data in client.hvals("dramatiq:default.msgs")]


def test_list_prints_jobs_and_next_run_times_without_touching_the_lock(redis_url, tmp_path):
    client = redis.Redis.from_url(redis_url)
    client.set(LEADER_KEY, "another-scheduler", ex=60)

    before = datetime.now(UTC)
    result = run_scheduler("--list", env=scheduler_env(redis_url, tmp_path))
    after = datetime.now(UTC)

    assert result.returncode == 0, result.stderr
    runs = dict(re.findall(r"^(\S+)\s.*next_run=(\S+)", result.stdout, flags=re.MULTILINE))
    assert set(runs) == {"ping-daily", "pong-every-6-hours"}
    daily = datetime.fromisoformat(runs["ping-daily"])
    every_six = datetime.fromisoformat(runs["pong-every-6-hours"])
    assert daily.utcoffset() == timedelta(0)
    assert (daily.hour, daily.minute) == (3, 0)
    # Next runs were computed at some moment between before and after (seconds apart when
    # the machine is busy, and a run may fall due in between).
    assert before <= daily <= after + timedelta(days=1)
    assert (every_six.hour % 6, every_six.minute, every_six.second) == (0, 0, 0)
    assert before <= every_six <= after + timedelta(hours=6)
    assert client.get(LEADER_KEY) == b"another-scheduler"
    assert client.keys("*") == [LEADER_KEY.encode()]


def test_list_shows_the_stuck_repository_sweep_every_five_minutes(tmp_path):
    # The production SCHEDULED_TASKS; --list needs no Redis.
    env = scheduler_env(
        "redis://127.0.0.1:1/0", tmp_path, DJANGO_SETTINGS_MODULE="tformance.settings"
    )

    result = run_scheduler("--list", env=env)

    assert result.returncode == 0, result.stderr
    [line] = [x for x in result.stdout.splitlines() if x.startswith("sweep-stuck-repositories ")]
    assert "task=apps.integrations.tasks.sweep_stuck_repositories " in line
    assert "schedule='0:05:00'" in line and "max_age_ms=300000" in line
    next_run = datetime.fromisoformat(re.search(r"next_run=(\S+)", line).group(1))
    assert (next_run.minute % 5, next_run.second) == (0, 0)


def test_once_enqueues_each_task_once_with_max_age_and_exits_0(redis_url, tmp_path):
    client = redis.Redis.from_url(redis_url)
    client.set(LEADER_KEY, "another-scheduler", ex=60)

    result = run_scheduler("--once", env=scheduler_env(redis_url, tmp_path))

    assert result.returncode == 0, result.stderr
    sent = sorted((m.actor_name, m.options.get("max_age")) for m in enqueued_messages(client))
    assert sent == [("ping", 600_000), ("pong", None)]
    assert "scheduler.enqueued job_id='ping-daily' actor='ping'" in result.stderr
    assert client.keys(LAST_RUN_KEY.format(job_id="*")) == []


def test_bad_scheduled_task_is_a_one_line_error_with_exit_1(redis_url, tmp_path):
    env = scheduler_env(redis_url, tmp_path, E2E_SCHEDULED_TASK="tests.scheduler.actors.missing")

    result = run_scheduler(env=env)

    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("scheduler: error: SCHEDULED_TASKS['ping-daily']['task']: cannot import")
    assert redis.Redis.from_url(redis_url).keys("*") == []


def test_unreachable_redis_at_start_is_a_one_line_error_with_exit_1(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = scheduler_env(f"redis://:secret@127.0.0.1:{port}/0", tmp_path)

    result = run_scheduler(env=env)

    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"scheduler: error: cannot reach Redis at 127.0.0.1:{port}/0")
    assert "secret" not in line


def test_standby_takes_over_after_the_leader_is_killed(redis_url, tmp_path):
    env = scheduler_env(
        redis_url,
        tmp_path,
        # The leader loses the lock on its own only if two heartbeats (TTL / 3 apart) are
        # late: with 5 s that takes a 3 s stall, which a busy machine does not cause.
        SCHEDULER_LOCK_TTL_SECONDS="5",
        SCHEDULER_STANDBY_RETRY_SECONDS="0.2",
    )
    client = redis.Redis.from_url(redis_url)
    with scheduler_process(env) as first:
        first.wait_for("scheduler.leading")
        first_token = client.get(LEADER_KEY)
        with scheduler_process(env) as second:
            second.wait_for("scheduler.standing_by")

            first.process.send_signal(signal.SIGKILL)
            first.process.wait(timeout=DEADLINE)
            second.wait_for("scheduler.leading")

            assert client.get(LEADER_KEY) not in (None, first_token)


def test_sigterm_exits_0_and_releases_the_lock(redis_url, tmp_path):
    client = redis.Redis.from_url(redis_url)
    with scheduler_process(scheduler_env(redis_url, tmp_path)) as leader:
        leader.wait_for("scheduler.leading")
        assert client.exists(LEADER_KEY)

        leader.process.send_signal(signal.SIGTERM)

        assert leader.process.wait(timeout=DEADLINE) == 0
    assert not client.exists(LEADER_KEY)
    assert leader.logged("scheduler.stopped")
