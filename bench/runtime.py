"""The benchmark's throwaway environment: a work directory, redis-server, Django.

Everything lives in ``.bench/`` at the project root and is recreated on every run.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path

from cryptography.fernet import Fernet

from devtools.localredis import LocalRedisError, start_redis_server

ROOT = Path(__file__).resolve().parent.parent
WORKDIR = ROOT / ".bench"
DATABASE = WORKDIR / "bench.sqlite3"


class BenchSetupError(Exception):
    """The benchmark cannot start; the message says why."""


def fresh_workdir() -> Path:
    """``.bench/`` with no database left from an earlier run (git ignores its contents)."""
    WORKDIR.mkdir(exist_ok=True)
    (WORKDIR / ".gitignore").write_text("*\n")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{DATABASE}{suffix}").unlink(missing_ok=True)
    return WORKDIR


def start_redis() -> tuple[subprocess.Popen, str]:
    """A redis-server on a free loopback port, no persistence; returns (process, URL)."""
    try:
        server = start_redis_server(WORKDIR / "redis")
    except LocalRedisError as exc:
        raise BenchSetupError(str(exc)) from None
    return server.process, server.url


def setup_django(*, github_api_url: str, redis_url: str, database_url: str | None = None) -> None:
    """Configure the project from the environment, as production does, then migrate.

    The Dramatiq broker is built from settings during ``django.setup()``, so ``REDIS_URL``
    must be in the environment before it. The sync's own settings (``GITHUB_PR_DETAILS``,
    ``GITHUB_TOKEN_MIN_INTERVAL_MS``, ...) are left alone: the project's defaults unless the
    caller's environment sets them. ``database_url``: default a fresh SQLite file in
    ``.bench/``.
    """
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "tformance.settings",
            "DEBUG": "false",
            "SECRET_KEY": "bench-" + secrets.token_urlsafe(32),
            "FIELD_ENCRYPTION_KEY": Fernet.generate_key().decode(),
            "DATABASE_URL": database_url or f"sqlite:///{DATABASE}",
            "GITHUB_API_URL": github_api_url,
            "REDIS_URL": redis_url,
            # The webhook freshness scenario's hook and receiver.
            "GITHUB_WEBHOOK_SECRET": secrets.token_urlsafe(32),
            "LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
        }
    )
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)
