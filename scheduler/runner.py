"""The long-running loop: stand by until the leader lock is free, then schedule while holding it."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import dramatiq
import redis
from apscheduler.schedulers import SchedulerNotRunningError
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.interval import IntervalTrigger
from dramatiq import Message

from scheduler.jobs import ScheduledJob, catch_up, enqueue, record_run
from scheduler.leader import LeaderLock

logger = logging.getLogger(__name__)

# Runs missed while this process was alive but stalled (suspend, long GC) still fire once,
# up to an hour late; runs missed while no scheduler ran are caught up from Redis instead.
MISFIRE_GRACE_SECONDS = 60 * 60
HEARTBEAT_JOB_ID = "scheduler-leader-heartbeat"

# Errors that mean "Redis or the broker is unreachable": the leader steps down and retries.
UNAVAILABLE = (redis.RedisError, dramatiq.errors.BrokerConnectionError)


def utc_now() -> datetime:
    return datetime.now(UTC)


class Runner:
    """Alternates between standing by and leading until `stop()` is called.

    While leading it extends the lock every third of its TTL; a failed extension, or a lock
    found not owned just before an enqueue, shuts the scheduler down and returns to standby.
    """

    def __init__(
        self,
        *,
        jobs: Sequence[ScheduledJob],
        client: redis.Redis,
        lock_ttl_seconds: float,
        standby_retry_seconds: float,
        now: Callable[[], datetime] = utc_now,
    ) -> None:
        self._jobs = list(jobs)
        self._client = client
        self._lock = LeaderLock(client, ttl_seconds=lock_ttl_seconds)
        self._standby_retry_seconds = standby_retry_seconds
        self._now = now
        self._stop = threading.Event()
        self._scheduler: BlockingScheduler | None = None
        self.leading = threading.Event()

    def run(self) -> None:
        standing_by = False
        while not self._stop.is_set():
            try:
                acquired = self._lock.acquire()
            except redis.RedisError as error:
                logger.warning(
                    "scheduler.redis_unavailable error=%r retry_in=%ss",
                    str(error),
                    self._standby_retry_seconds,
                )
                self._stop.wait(self._standby_retry_seconds)
                continue
            if not acquired:
                if not standing_by:
                    logger.info(
                        "scheduler.standing_by reason='another scheduler holds the lock' "
                        "retry_every=%ss",
                        self._standby_retry_seconds,
                    )
                    standing_by = True
                self._stop.wait(self._standby_retry_seconds)
                continue
            standing_by = False
            try:
                self._lead()
            finally:
                self.leading.clear()
                self._lock.release()
            if not self._stop.is_set():
                logger.warning("scheduler.stepped_down retry_in=%ss", self._standby_retry_seconds)
                # Pause so a flapping Redis is not hammered with acquire attempts.
                self._stop.wait(self._standby_retry_seconds)
        logger.info("scheduler.stopped")

    def stop(self) -> None:
        self._stop.set()
        scheduler = self._scheduler
        if scheduler is not None:
            _shut_down(scheduler)

    def _lead(self) -> None:
        logger.info("scheduler.leading lock_ttl=%ss", self._lock.ttl_seconds)
        self.leading.set()
        try:
            catch_up(self._jobs, client=self._client, now=self._now(), send=self._send_if_leader)
        except UNAVAILABLE as error:
            logger.warning("scheduler.catch_up_failed error=%r", str(error))
            return
        if not self._lock.owned():
            return

        scheduler = BlockingScheduler(
            timezone=UTC,
            job_defaults={
                "coalesce": True,
                "max_instances": 1,
                "misfire_grace_time": MISFIRE_GRACE_SECONDS,
            },
        )
        for job in self._jobs:
            scheduler.add_job(
                self._scheduled_run, trigger=job.trigger, args=[job], id=job.job_id, name=job.task
            )
        scheduler.add_job(
            self._heartbeat,
            trigger=IntervalTrigger(seconds=self._lock.ttl_seconds / 3, timezone=UTC),
            id=HEARTBEAT_JOB_ID,
            # First beat at start-up: a stop() that came before the scheduler was running
            # could not shut it down, and the beat checks for it.
            next_run_time=self._now(),
            # Late is still worth trying: a stalled leader learns at once that it lost the lock.
            misfire_grace_time=None,
        )
        self._scheduler = scheduler
        try:
            scheduler.start()
        finally:
            self._scheduler = None

    def _heartbeat(self) -> None:
        if self._stop.is_set() or not self._lock.extend():
            self._step_down()

    def _scheduled_run(self, job: ScheduledJob) -> None:
        try:
            message = self._send_if_leader(job)
            if message is not None:
                record_run(self._client, job.job_id, self._now())
        except UNAVAILABLE as error:
            # Not recorded as run. Stepping down makes that the retry: leading again (this
            # scheduler once Redis answers, or a standby) starts with catching missed runs up.
            # Staying on would leave it missed until some later leader start, a day away for
            # the daily fan-out if Redis only blinked.
            logger.error("scheduler.enqueue_failed job_id=%r error=%r", job.job_id, str(error))
            self._step_down()

    def _send_if_leader(self, job: ScheduledJob) -> Message | None:
        if not self._lock.owned():
            logger.warning("scheduler.not_leader job_id=%r skipped=True", job.job_id)
            self._step_down()
            return None
        return enqueue(job)

    def _step_down(self) -> None:
        scheduler = self._scheduler
        if scheduler is not None:
            _shut_down(scheduler)


def _shut_down(scheduler: BlockingScheduler) -> None:
    try:
        scheduler.shutdown(wait=False)
    except SchedulerNotRunningError:
        pass  # Already stopped by the other of stop() / a lost lock.
