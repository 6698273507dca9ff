"""Running the project's own processes (manage.py, workers, the scheduler) from tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from django.conf import settings
from django.db import connection

from tests import builders

ROOT = Path(__file__).resolve().parents[1]


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
        DATABASE_URL=f"sqlite:///{connection.settings_dict['NAME']}",
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
