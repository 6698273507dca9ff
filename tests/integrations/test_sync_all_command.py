"""``manage.py sync_all``: enqueue the daily fan-out now, or exit 75 when Redis is down."""

from __future__ import annotations

import os
import subprocess
import sys
from io import StringIO
from pathlib import Path

import dramatiq
import pytest
import redis
from django.core.management import call_command

from apps.integrations.tasks import QUEUE
from tests import processes
from tformance.test_settings import TEST_ENCRYPTION_KEYS

ROOT = Path(__file__).resolve().parents[2]
UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"  # nothing listens there


@pytest.fixture
def database_url(django_db_setup) -> str:
    """The test database (migrated, and SQLite or PostgreSQL as this run is) for the command
    processes; sync_all reads nothing from it."""
    return processes.database_url()


def manage(*args: str, database_url: str, redis_url: str) -> subprocess.CompletedProcess[str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DJANGO_SETTINGS_MODULE", "DEBUG", "DATABASE_URL", "REDIS_URL"}
    }
    env.update(
        DJANGO_SETTINGS_MODULE="tformance.settings",
        SECRET_KEY="test",
        FIELD_ENCRYPTION_KEY=TEST_ENCRYPTION_KEYS[0],
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
    )
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.django_db  # the command checks the database is migrated first
def test_sync_all_enqueues_one_fanout_message_and_prints_its_id(stub_broker):
    out = StringIO()

    call_command("sync_all", stdout=out)

    (message,) = [dramatiq.Message.decode(data) for data in stub_broker.queues[QUEUE].queue]
    assert message.actor_name == "sync_all_repositories"
    assert out.getvalue() == f"Enqueued the fan-out (message {message.message_id}).\n"


def test_sync_all_with_redis_unreachable_exits_75_with_one_line(database_url):
    result = manage("sync_all", database_url=database_url, redis_url=UNREACHABLE_REDIS)

    assert result.returncode == 75
    assert result.stderr.startswith("error: cannot reach the broker at REDIS_URL")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stdout == ""


def test_sync_all_puts_the_fanout_message_in_redis(database_url, redis_url):
    result = manage("sync_all", database_url=database_url, redis_url=redis_url)

    client = redis.Redis.from_url(redis_url)
    assert result.returncode == 0, result.stderr
    assert client.llen(f"dramatiq:{QUEUE}") == 1
    (redis_id,) = client.lrange(f"dramatiq:{QUEUE}", 0, -1)
    message = dramatiq.Message.decode(client.hget(f"dramatiq:{QUEUE}.msgs", redis_id))
    assert message.actor_name == "sync_all_repositories"
    assert result.stdout == f"Enqueued the fan-out (message {message.message_id}).\n"
