"""The runner's lead / stand-by loop, in a thread, against fakeredis and the StubBroker.

Nothing here sleeps to show that nothing happens: the lock changes hands at a known send, and
"nothing more is sent" is checked after the runner has been seen retrying the lock.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

import fakeredis
import redis
from dramatiq.middleware import Middleware, MiddlewareError

from scheduler.jobs import load_jobs
from scheduler.leader import LEADER_KEY
from scheduler.runner import Runner
from tests.processes import wait_until


class LockAttemptCounter(fakeredis.FakeRedis):
    """fakeredis that counts attempts to take the leader lock (redis-py's Lock: SET NX)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lock_attempts = 0

    def set(self, name, value, *args, **kwargs):
        if name == LEADER_KEY and kwargs.get("nx"):
            self.lock_attempts += 1
        return super().set(name, value, *args, **kwargs)


class TakeLockAtSend(Middleware):
    """Another scheduler takes the leader lock as the ``nth`` message is enqueued."""

    def __init__(self, client: fakeredis.FakeRedis, nth: int) -> None:
        self.client = client
        self.nth = nth
        self.sent = 0

    def after_enqueue(self, broker, message, delay) -> None:
        self.sent += 1
        if self.sent == self.nth:
            self.client.set(LEADER_KEY, "another-scheduler", px=60_000)


def test_leader_that_loses_its_lock_stops_enqueuing_and_stands_by(stub_broker, caplog):
    caplog.set_level(logging.INFO, logger="scheduler")
    client = LockAttemptCounter(server=fakeredis.FakeServer())
    # The lock changes hands, as after a network partition outlasting the TTL, while the
    # second message is sent: that send is complete and no other is in flight (one job, one
    # instance at a time), so a runner that stops enqueuing leaves exactly two messages.
    stub_broker.add_middleware(TakeLockAtSend(client, nth=2))
    jobs = load_jobs(
        {"ping-often": {"task": "tests.scheduler.actors.ping", "schedule": timedelta(seconds=0.1)}}
    )
    # A TTL the heartbeat (every TTL / 3) keeps on a busy machine: only the takeover ends it.
    runner = Runner(jobs=jobs, client=client, lock_ttl_seconds=3, standby_retry_seconds=0.1)
    thread = threading.Thread(target=runner.run)
    thread.start()
    try:
        wait_until(lambda: "scheduler.standing_by" in caplog.text, timeout=60, what="stand-by")
        # Three more failed attempts at the lock: still standing by, and the 0.1 s job had
        # time to fire several times over had its scheduler been left running.
        attempts = client.lock_attempts
        wait_until(
            lambda: client.lock_attempts >= attempts + 3, timeout=60, what="3 stand-by retries"
        )

        assert not runner.leading.is_set()
        assert stub_broker.queues["default"].qsize() == 2
        assert client.get(LEADER_KEY) == b"another-scheduler"
    finally:
        runner.stop()
        thread.join(timeout=60)
    assert not thread.is_alive()


class QueueRefuses(MiddlewareError, redis.ConnectionError):
    """What an unreachable Redis raises, in a form the broker lets out of a before-hook."""


class RefuseFirstSend(Middleware):
    """The broker refuses the first message, as a Redis that blinked at that moment would."""

    def __init__(self) -> None:
        self.refused = False

    def before_enqueue(self, broker, message, delay) -> None:
        if not self.refused:
            self.refused = True
            raise QueueRefuses("Error 111 connecting to 127.0.0.1:6379. Connection refused.")


def test_failed_scheduled_send_steps_down_and_is_caught_up_on_leading_again(stub_broker, caplog):
    caplog.set_level(logging.INFO, logger="scheduler")
    client = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    stub_broker.add_middleware(RefuseFirstSend())
    jobs = load_jobs(
        {"ping-often": {"task": "tests.scheduler.actors.ping", "schedule": timedelta(seconds=1)}}
    )
    runner = Runner(jobs=jobs, client=client, lock_ttl_seconds=3, standby_retry_seconds=0.1)
    thread = threading.Thread(target=runner.run)
    thread.start()
    try:
        # When the first scheduled send fails
        wait_until(lambda: "scheduler.catch_up " in caplog.text, timeout=60, what="catch-up")

        # Then the leader stepped down, and leading again sent the run it had missed
        events = [r.getMessage().split()[0] for r in caplog.records]
        failed = events.index("scheduler.enqueue_failed")
        assert events.index("scheduler.stepped_down", failed) < events.index(
            "scheduler.catch_up", failed
        )
        assert stub_broker.queues["default"].qsize() >= 1
    finally:
        runner.stop()
        thread.join(timeout=60)
    assert not thread.is_alive()
