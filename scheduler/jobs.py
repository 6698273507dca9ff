"""Scheduled jobs: read and validate `SCHEDULED_TASKS`, enqueue a job, catch up a missed run."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import dramatiq
import redis
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from django.utils.module_loading import import_string
from dramatiq import Message

logger = logging.getLogger(__name__)

# Interval schedules count from a fixed origin, so a restart does not restart their clock
# (APScheduler's default start is "one interval after now").
INTERVAL_ANCHOR = datetime(2000, 1, 1, tzinfo=UTC)
LAST_RUN_KEY = "tformance:scheduler:last-run:{job_id}"

_ENTRY_KEYS = {"task", "schedule", "expire_seconds"}
_CRON_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


class ConfigError(Exception):
    """A `SCHEDULED_TASKS` entry that cannot be scheduled; the message names the entry."""


@dataclass(frozen=True)
class ScheduledJob:
    job_id: str
    task: str
    actor: dramatiq.Actor
    trigger: BaseTrigger
    schedule: str
    max_age_ms: int | None


def load_jobs(tasks: Any) -> list[ScheduledJob]:
    """Validate `settings.SCHEDULED_TASKS` and resolve each entry to an actor and a trigger."""
    if not isinstance(tasks, Mapping) or not tasks:
        raise ConfigError("SCHEDULED_TASKS must be a non-empty dict of {job_id: {...}}")
    return [_load_job(job_id, entry) for job_id, entry in tasks.items()]


def _load_job(job_id: Any, entry: Any) -> ScheduledJob:
    where = f"SCHEDULED_TASKS[{job_id!r}]"
    if not isinstance(job_id, str) or not job_id:
        raise ConfigError(f"{where}: the job id must be a non-empty string")
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where}: expected a dict with 'task' and 'schedule'")
    unknown = sorted(set(entry) - _ENTRY_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(_ENTRY_KEYS)}")

    task = entry.get("task")
    if not isinstance(task, str) or "." not in task:
        raise ConfigError(f"{where}['task']: expected a dotted path to an actor, got {task!r}")
    try:
        actor = import_string(task)
    except ImportError as error:
        raise ConfigError(f"{where}['task']: cannot import {task!r} ({error})") from None
    if not isinstance(actor, dramatiq.Actor):
        raise ConfigError(f"{where}['task']: {task!r} is not a Dramatiq actor")

    schedule = entry.get("schedule")
    try:
        trigger = build_trigger(schedule)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where}['schedule']: {error}") from None

    expire_seconds = entry.get("expire_seconds")
    valid_int = isinstance(expire_seconds, int) and not isinstance(expire_seconds, bool)
    if expire_seconds is not None and not (valid_int and expire_seconds >= 1):
        raise ConfigError(
            f"{where}['expire_seconds']: expected a positive int, got {expire_seconds!r}"
        )
    return ScheduledJob(
        job_id=job_id,
        task=task,
        actor=actor,
        trigger=trigger,
        schedule=str(schedule),
        max_age_ms=None if expire_seconds is None else expire_seconds * 1000,
    )


def build_trigger(schedule: object) -> BaseTrigger:
    """A UTC trigger for a `timedelta` or a 5-field crontab string (standard cron numbering)."""
    if isinstance(schedule, timedelta):
        if schedule <= timedelta(0):
            raise ValueError(f"a timedelta schedule must be positive, got {schedule!r}")
        return IntervalTrigger(
            seconds=schedule.total_seconds(), start_date=INTERVAL_ANCHOR, timezone=UTC
        )
    if isinstance(schedule, str):
        return _cron_trigger(schedule)
    raise TypeError(f"expected a timedelta or a crontab string, got {type(schedule).__name__}")


def _cron_trigger(expression: str) -> CronTrigger:
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(
            f"{expression!r} is not a 5-field crontab (minute hour day month day-of-week)"
        )
    minute, hour, day, month, day_of_week = fields
    # Cron matches either day field when both are restricted; APScheduler requires both.
    # Refusing the combination beats silently firing on fewer days than the operator expects.
    if day != "*" and day_of_week != "*":
        raise ValueError(
            f"{expression!r} restricts both day-of-month and day-of-week; use only one"
        )
    try:
        day_of_week = _cron_day_of_week(day_of_week)
        return CronTrigger(
            minute=minute,
            hour=hour,
            day=day,
            month=month,
            day_of_week=day_of_week,
            timezone=UTC,
        )
    except ValueError as error:
        raise ValueError(f"{expression!r} is not a valid crontab: {error}") from None


def _cron_day_of_week(field: str) -> str:
    """Rewrite a cron day-of-week field (0 or 7 = Sunday) as day names.

    APScheduler 3.x numbers days from Monday = 0, so "0 9 * * 1" would fire on Tuesdays if
    passed through; names mean the same thing to both.
    """
    if field == "*":
        return field
    days: set[int] = set()
    for part in field.split(","):
        spec, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if step < 1:
            raise ValueError(f"bad day-of-week step in {part!r}")
        if spec == "*":
            first, last = 0, 6
        elif "-" in spec:
            start, _, end = spec.partition("-")
            first, last = _cron_day(start), _cron_day(end)
        else:
            first = _cron_day(spec)
            last = 6 if step_text else first
        if first > last:
            raise ValueError(f"bad day-of-week range {part!r}")
        days.update(day % 7 for day in range(first, last + 1, step))
    return ",".join(_CRON_DAY_NAMES[day] for day in sorted(days))


def _cron_day(text: str) -> int:
    name = text.strip().lower()
    if name in _CRON_DAY_NAMES:
        return _CRON_DAY_NAMES.index(name)
    if name.isdigit() and 0 <= int(name) <= 7:
        return int(name)
    raise ValueError(f"bad day of week {text!r} (0-7 or sun-sat)")


def next_fire_time(job: ScheduledJob, *, now: datetime) -> datetime | None:
    return job.trigger.get_next_fire_time(None, now)


def enqueue(job: ScheduledJob) -> Message:
    """Send one message for the job; AgeLimit drops it if no worker takes it within max_age."""
    options: dict[str, Any] = {}
    if job.max_age_ms is not None:
        options["max_age"] = job.max_age_ms
    message = job.actor.send_with_options(**options)
    logger.info(
        "scheduler.enqueued job_id=%r actor=%r message_id=%r max_age=%r",
        job.job_id,
        job.actor.actor_name,
        message.message_id,
        job.max_age_ms,
        extra={
            "job_id": job.job_id,
            "actor": job.actor.actor_name,
            "message_id": message.message_id,
            "max_age": job.max_age_ms,
        },
    )
    return message


def last_run(client: redis.Redis, job_id: str) -> datetime | None:
    value = client.get(LAST_RUN_KEY.format(job_id=job_id))
    if value is None:
        return None
    return datetime.fromisoformat(value.decode() if isinstance(value, bytes) else value)


def record_run(client: redis.Redis, job_id: str, at: datetime) -> None:
    client.set(LAST_RUN_KEY.format(job_id=job_id), at.astimezone(UTC).isoformat())


def missed_run(job: ScheduledJob, *, last: datetime, now: datetime) -> datetime | None:
    """The first fire time after `last`, if it has already passed."""
    # Triggers answer "at or after"; a run recorded exactly on a fire time must not count twice.
    due = job.trigger.get_next_fire_time(None, last + timedelta(microseconds=1))
    if due is not None and due <= now:
        return due
    return None


def catch_up(
    jobs: Iterable[ScheduledJob],
    *,
    client: redis.Redis,
    now: datetime,
    send: Callable[[ScheduledJob], Message | None] = enqueue,
) -> list[str]:
    """Enqueue once each job whose run was missed while no scheduler was running.

    A job with no recorded run is new: `now` becomes its baseline and nothing is sent, so a
    first deployment does not fire every job at once. `send` returns None when it declined to
    enqueue (leadership lost); the run then stays missed for the next leader. Returns the ids
    of the jobs caught up.
    """
    caught_up = []
    for job in jobs:
        last = last_run(client, job.job_id)
        if last is None:
            logger.info("scheduler.baseline_recorded job_id=%r at=%s", job.job_id, now.isoformat())
            record_run(client, job.job_id, now)
            continue
        due = missed_run(job, last=last, now=now)
        if due is None:
            continue
        logger.info(
            "scheduler.catch_up job_id=%r first_missed=%s last_run=%s",
            job.job_id,
            due.isoformat(),
            last.isoformat(),
        )
        if send(job) is None:
            break
        record_run(client, job.job_id, now)
        caught_up.append(job.job_id)
    return caught_up
