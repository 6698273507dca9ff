"""A throwaway redis-server on a free loopback port, for tests, `make demo` and `make bench`.

Not used in production: there REDIS_URL points at a managed Redis.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from devtools.processes import free_port, stop_process


class LocalRedisError(RuntimeError):
    """redis-server is missing or did not start; the message says which."""


@dataclass
class LocalRedis:
    process: subprocess.Popen
    url: str

    def stop(self, timeout: float = 10) -> None:
        stop_process(self.process, timeout=timeout)


def start_redis_server(directory: Path, *, new_session: bool = False) -> LocalRedis:
    """Start redis-server without persistence in ``directory`` (its log goes there too) and
    wait until it answers. ``new_session`` keeps a terminal's Ctrl-C from reaching it."""
    executable = shutil.which("redis-server")
    if executable is None:
        raise LocalRedisError("redis-server is not installed (make test/demo/bench install it)")
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    with (directory / "redis.log").open("w") as log:
        process = subprocess.Popen(
            [executable, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
            + ["--appendonly", "no", "--dir", str(directory)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=new_session,
        )
    server = LocalRedis(process=process, url=f"redis://127.0.0.1:{port}/0")
    client = redis.Redis.from_url(server.url)
    deadline = time.monotonic() + 10
    try:
        while True:
            try:
                client.ping()
                return server
            except redis.ConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    server.stop()
                    raise LocalRedisError(f"redis-server did not start on port {port}") from None
                time.sleep(0.05)
    finally:
        client.close()
