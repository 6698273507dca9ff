from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from devtools.github_emulator import GitHubEmulator
from tests.builders import TOKEN

BACKEND_MARKERS = {"sqlite_only": "sqlite", "postgres_only": "postgresql"}


def pytest_sessionfinish(session, exitstatus) -> None:
    """Django deletes the SQLite test database file but not its WAL and shared-memory files."""
    from pathlib import Path

    from django.conf import settings

    database = settings.DATABASES["default"]
    name = database.get("TEST", {}).get("NAME")
    if database["ENGINE"] == "django.db.backends.sqlite3" and name:
        for suffix in ("-wal", "-shm"):
            Path(f"{name}{suffix}").unlink(missing_ok=True)


def pytest_collection_modifyitems(config, items) -> None:
    """Skip the tests of the other backend: the suite runs on whichever DATABASE_URL names."""
    from django.db import connection

    for item in items:
        for marker, vendor in BACKEND_MARKERS.items():
            if item.get_closest_marker(marker) and connection.vendor != vendor:
                item.add_marker(
                    pytest.mark.skip(reason=f"{marker}: this run is on {connection.vendor}")
                )


@pytest.fixture
def emulator(settings) -> Iterator[GitHubEmulator]:
    """A GitHub emulator on a loopback port, with one valid token; the project points at it."""
    with GitHubEmulator() as emu:
        emu.add_token(TOKEN, login="octocat")
        settings.GITHUB_API_URL = emu.api_url
        yield emu


@pytest.fixture
def now(emulator: GitHubEmulator) -> datetime:
    return emulator.now()


@pytest.fixture
def days_ago(now: datetime):
    def at(days: float) -> datetime:
        return (now - timedelta(days=days)).astimezone(UTC).replace(microsecond=0)

    return at


@pytest.fixture
def process_logs(tmp_path):
    """For tests whose processes log to ``tmp_path/*.log``: pytest shows teardown output of
    failed tests only, so a failure report ends with each log's tail; and no log may hold a
    token."""
    import sys

    from tests.processes import TOKEN_SHAPE

    yield tmp_path
    logs = sorted(tmp_path.glob("*.log"))
    for log in logs:
        sys.stdout.write(f"\n--- end of {log.name} ---\n{log.read_text()[-3000:]}\n")
    assert not [log.name for log in logs if TOKEN_SHAPE.search(log.read_text())]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> Iterator[str]:
    """A real redis-server on a free loopback port, for end-to-end tests; yields its URL."""
    from devtools.localredis import LocalRedisError, start_redis_server

    try:
        server = start_redis_server(tmp_path_factory.mktemp("redis"))
    except LocalRedisError as exc:
        pytest.fail(str(exc))
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server) -> str:
    """The real redis-server, emptied for this test."""
    import redis

    redis.Redis.from_url(redis_server).flushall()
    return redis_server


@pytest.fixture
def stub_broker():
    """The project's StubBroker (production middleware list), emptied; restored afterwards."""
    from queue import Queue

    import dramatiq

    broker = dramatiq.get_broker()
    broker.flush_all()
    # Fresh queues: a worker stopped while holding a delayed message (a retry, a rate-limit
    # deferral) never marks it done, and the old queue's join() would wait for it forever.
    for name in broker.queues:
        broker.queues[name] = Queue()
    middleware = list(broker.middleware)
    yield broker
    broker.flush_all()
    broker.middleware[:] = middleware


@pytest.fixture
def stub_worker(stub_broker):
    """A real Dramatiq worker (threads) on the StubBroker."""
    import dramatiq

    worker = dramatiq.Worker(stub_broker, worker_timeout=50, worker_threads=4)
    worker.start()
    yield worker
    worker.stop()


@pytest.fixture
def use_redis_broker():
    """``use(url)`` makes a RedisBroker at ``url`` the global broker for this test, the one
    ``enqueue_many`` sends through (actors keep the StubBroker); restored afterwards."""
    import dramatiq
    from dramatiq.brokers.redis import RedisBroker

    stub = dramatiq.get_broker()
    made: list[RedisBroker] = []

    def use(url: str) -> RedisBroker:
        broker = RedisBroker(url=url)
        made.append(broker)
        dramatiq.set_broker(broker)
        return broker

    yield use
    dramatiq.set_broker(stub)
    for broker in made:
        broker.client.connection_pool.disconnect()
