from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from datetime import timedelta

import dramatiq
import fakeredis
import pytest
from dramatiq.brokers.stub import StubBroker

from scheduler.jobs import load_jobs
from scheduler.leader import LEADER_KEY
from scheduler.runner import Runner


@pytest.fixture
def broker() -> Iterator[StubBroker]:
    stub = dramatiq.get_broker()
    assert isinstance(stub, StubBroker)
    stub.flush_all()
    yield stub
    stub.flush_all()


def wait_until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_leader_that_loses_its_lock_stops_enqueuing_and_stands_by(broker, caplog):
    caplog.set_level(logging.INFO, logger="scheduler")
    client = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    jobs = load_jobs(
        {"ping-often": {"task": "tests.scheduler.actors.ping", "schedule": timedelta(seconds=0.1)}}
    )
    runner = Runner(jobs=jobs, client=client, lock_ttl_seconds=0.6, standby_retry_seconds=0.1)
    thread = threading.Thread(target=runner.run)
    thread.start()
    try:
        queue = broker.queues["default"]
        wait_until(lambda: queue.qsize() >= 2)

        # Another scheduler holds the lock now, as after a network partition outlasting the TTL.
        client.set(LEADER_KEY, "another-scheduler", px=60_000)
        wait_until(lambda: not runner.leading.is_set())
        sent_before = queue.qsize()
        time.sleep(0.5)

        assert queue.qsize() == sent_before
        assert "scheduler.standing_by" in caplog.text
        assert client.get(LEADER_KEY) == b"another-scheduler"
    finally:
        runner.stop()
        thread.join(timeout=5)
    assert not thread.is_alive()
