"""`python -m scheduler`: enqueue the Dramatiq actors in `settings.SCHEDULED_TASKS` on schedule.

Modes:
  (default)  Run until SIGTERM/SIGINT (exit 0). Only the process holding the Redis lock
             `tformance:scheduler:leader` enqueues; others stand by and take over when it
             expires. On taking the lead, a run missed while no scheduler was leading is
             enqueued once (last runs are kept in `tformance:scheduler:last-run:<job_id>`).
  --list     Print each job and its next run time (UTC); touches neither Redis nor the lock.
  --once     Enqueue every job once now and exit; ignores the lock and records no last run.

Redis: unreachable at start-up, the scheduler exits 1 with a one-line error (a wrong
REDIS_URL should fail the deploy, not idle). Lost later, the leader stops enqueuing and the
process keeps retrying every SCHEDULER_STANDBY_RETRY_SECONDS, logging each failure.

A bad SCHEDULED_TASKS entry is a one-line error on stderr and exit 1.

Environment (tunables, with defaults):
  SCHEDULER_LOCK_TTL_SECONDS=30      how long a dead leader blocks a standby; the leader
                                     extends the lock every third of it.
  SCHEDULER_STANDBY_RETRY_SECONDS=5  how often a standby retries the lock.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from types import FrameType

import django
import redis
from django.conf import settings

from scheduler.jobs import ConfigError, ScheduledJob, enqueue, load_jobs, next_fire_time
from scheduler.runner import UNAVAILABLE, Runner

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)

    # The actors' broker is the one django_dramatiq builds from settings during setup.
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tformance.settings")
    django.setup()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format=LOG_FORMAT)
    # APScheduler logs every job run at INFO; the heartbeat alone would flood the log.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)

    try:
        jobs = load_jobs(getattr(settings, "SCHEDULED_TASKS", None))
    except ConfigError as error:
        return _fail(str(error))

    if args.list:
        return _list(jobs)
    if args.once:
        return _once(jobs)
    return _run(jobs, redis_url=settings.REDIS_URL)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m scheduler",
        description="Enqueue the Dramatiq actors in settings.SCHEDULED_TASKS on their schedule.",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--list", action="store_true", help="print each job and its next run time, then exit"
    )
    mode.add_argument("--once", action="store_true", help="enqueue every job once, then exit")
    return parser


def _list(jobs: Sequence[ScheduledJob]) -> int:
    now = datetime.now(UTC)
    for job in jobs:
        next_run = next_fire_time(job, now=now)
        sys.stdout.write(
            f"{job.job_id}  task={job.task}  schedule={job.schedule!r}  "
            f"next_run={next_run.isoformat() if next_run else 'never'}  "
            f"max_age_ms={job.max_age_ms}\n"
        )
    return 0


def _once(jobs: Sequence[ScheduledJob]) -> int:
    for job in jobs:
        try:
            enqueue(job)
        except UNAVAILABLE as error:
            return _fail(f"cannot enqueue {job.job_id!r}: {error}")
    return 0


def _run(jobs: Sequence[ScheduledJob], *, redis_url: str) -> int:
    try:
        lock_ttl = _positive_seconds("SCHEDULER_LOCK_TTL_SECONDS", 30)
        standby_retry = _positive_seconds("SCHEDULER_STANDBY_RETRY_SECONDS", 5)
    except ValueError as error:
        return _fail(str(error))

    # Bounded socket waits: a hung Redis must not hold the heartbeat past the lock's TTL.
    timeout = max(1.0, lock_ttl / 3)
    client = redis.Redis.from_url(redis_url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        client.ping()
    except redis.RedisError as error:
        return _fail(f"cannot reach Redis at {_location(client)} (REDIS_URL): {error}")

    runner = Runner(
        jobs=jobs,
        client=client,
        lock_ttl_seconds=lock_ttl,
        standby_retry_seconds=standby_retry,
    )

    def on_signal(signum: int, frame: FrameType | None) -> None:
        # Stop from another thread: the handler interrupts the main thread, which may be
        # inside APScheduler or a lock that shutdown() needs.
        threading.Thread(target=_stop, args=(runner, signum), name="scheduler-stop").start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    runner.run()
    return 0


def _stop(runner: Runner, signum: int) -> None:
    logging.getLogger("scheduler").info("scheduler.stopping signal=%s", signal.Signals(signum).name)
    runner.stop()


def _positive_seconds(name: str, default: float) -> float:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise ValueError(f"{name} must be a positive number of seconds, got {text!r}")
    return value


def _location(client: redis.Redis) -> str:
    # Host, port and db only: REDIS_URL may carry a password.
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"unix:{kwargs['path']}"
    return f"{kwargs.get('host')}:{kwargs.get('port')}/{kwargs.get('db', 0)}"


def _fail(message: str) -> int:
    sys.stderr.write(f"scheduler: error: {message}\n")
    return 1


if __name__ == "__main__":
    sys.exit(main())
