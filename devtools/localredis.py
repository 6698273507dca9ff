"""A throwaway redis-server on a free loopback port, for tests, `make demo` and `make bench`.

Not used in production: there REDIS_URL points at a managed Redis.
"""

from __future__ import annotations

import shutil
import signal
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
    port: int
    directory: Path
    appendonly: bool = False
    new_session: bool = False

    def stop(self, timeout: float = 10, *, sig: int = signal.SIGTERM) -> None:
        """Stop the server: SIGTERM shuts it down cleanly, SIGKILL is a crash."""
        stop_process(self.process, sig=sig, timeout=timeout)

    def start(self, timeout: float = 10) -> None:
        """Start the stopped server again on the same port and directory, so clients that
        hold the URL reconnect to it. Data survives only with ``appendonly`` (from the
        append-only file, even after SIGKILL: it is fsynced on every write)."""
        if self.process.poll() is None:
            raise LocalRedisError(f"redis-server on port {self.port} is still running")
        self.process = _launch(
            self.port,
            self.directory,
            appendonly=self.appendonly,
            new_session=self.new_session,
            restart=True,
        )
        _wait_until_answering(self, timeout=timeout)


def start_redis_server(
    directory: Path, *, new_session: bool = False, appendonly: bool = False
) -> LocalRedis:
    """Start redis-server in ``directory`` (its log goes there too) and wait until it
    answers. Without persistence unless ``appendonly``: then every write is appended and
    fsynced (``appendfsync always``), so a killed server restarts with everything it had
    acknowledged. ``new_session`` keeps a terminal's Ctrl-C from reaching it."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    server = LocalRedis(
        process=_launch(port, directory, appendonly=appendonly, new_session=new_session),
        url=f"redis://127.0.0.1:{port}/0",
        port=port,
        directory=directory,
        appendonly=appendonly,
        new_session=new_session,
    )
    _wait_until_answering(server, timeout=10)
    return server


def _launch(
    port: int, directory: Path, *, appendonly: bool, new_session: bool, restart: bool = False
) -> subprocess.Popen:
    executable = shutil.which("redis-server")
    if executable is None:
        raise LocalRedisError("redis-server is not installed (make test/demo/bench install it)")
    if appendonly:
        persistence = ["--appendonly", "yes", "--appendfsync", "always"]
    else:
        persistence = ["--appendonly", "no"]
    # A restarted server's log follows the first one's.
    with (directory / "redis.log").open("a" if restart else "w") as log:
        return subprocess.Popen(
            [executable, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
            + persistence
            + ["--dir", str(directory)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=new_session,
        )


def _wait_until_answering(server: LocalRedis, *, timeout: float) -> None:
    client = redis.Redis.from_url(server.url)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                client.ping()
                return
            # Also "LOADING" (BusyLoadingError): a restarted server replaying its file.
            except redis.ConnectionError:
                if server.process.poll() is not None or time.monotonic() > deadline:
                    server.stop()
                    raise LocalRedisError(
                        f"redis-server did not start on port {server.port}"
                    ) from None
                time.sleep(0.05)
    finally:
        client.close()
