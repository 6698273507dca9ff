"""Running the project's own processes (manage.py, workers, the scheduler) from tests."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote, urlencode

from django.conf import settings
from django.db import connection

from tests import builders

ROOT = Path(__file__).resolve().parents[1]
DEADLINE = 120  # seconds: any wait on a started process, on a loaded 2-core machine
# The shape of every token the tests use (builders.TOKEN, builders.new_token()).
TOKEN_SHAPE = re.compile(r"gh[pousr]_[A-Za-z0-9_]{16,}")


def database_url() -> str:
    """DATABASE_URL of the database this test run uses (pytest-django's test database once
    it is set up), for the processes a test starts."""
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    assert connection.vendor == "postgresql", connection.vendor
    user = quote(db["USER"] or "", safe="")
    if db["PASSWORD"]:
        user += ":" + quote(db["PASSWORD"], safe="")
    # An empty HOST is libpq's default socket; a socket directory is percent-encoded.
    host = quote(db["HOST"] or "", safe="")
    port = f":{db['PORT']}" if db["PORT"] else ""
    query = f"?{urlencode(db['OPTIONS'])}" if db["OPTIONS"] else ""
    return f"postgres://{user}@{host}{port}/{quote(db['NAME'], safe='')}{query}"


def process_env(emulator, **extra: str) -> dict[str, str]:
    """Production settings pointed at the test database, the emulator and nothing else."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DJANGO_SETTINGS_MODULE", "DEBUG", "DATABASE_URL"}
    }
    env.update(
        DJANGO_SETTINGS_MODULE="tformance.settings",
        SECRET_KEY="test",
        FIELD_ENCRYPTION_KEY=",".join(settings.FIELD_ENCRYPTION_KEY),
        DATABASE_URL=database_url(),
        GITHUB_API_URL=emulator.api_url,
        GITHUB_TOKEN_MIN_INTERVAL_MS="0",
        GITHUB_RATE_LIMIT_JITTER_SECONDS="0.2",
        GITHUB_TOKEN=builders.TOKEN,
        REDIS_URL="redis://127.0.0.1:1/0",  # nothing listens there unless a test says so
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def manage(emulator, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=process_env(emulator, **env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """Start a long-running process in its own session (so its children can be killed
    with it), logging to ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def wait_until(
    condition: Callable[[], bool], *, timeout: float, what: str, log: Path | None = None
):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    tail = log.read_text()[-3000:] if log and log.exists() else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{tail}")


def start_worker(
    env: dict[str, str], log: Path, *, threads: int = 2, host: str | None = None
) -> subprocess.Popen:
    """A ``rundramatiq`` worker (one process, ``threads`` threads) logging to ``log``;
    ``host`` makes it present itself as that machine (``SYNC_HOST_ID``)."""
    return start(
        [sys.executable, "manage.py", "rundramatiq", "--processes", "1", "--threads", str(threads)],
        {**env, "SYNC_HOST_ID": host} if host else env,
        log,
    )
