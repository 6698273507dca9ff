"""Starting and stopping the helper processes of tests, the demo and the benchmark."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import time


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process(
    process: subprocess.Popen, *, sig: int = signal.SIGTERM, timeout: float = 15
) -> None:
    """Send ``sig`` to ``process``; SIGKILL it if it outlives ``timeout``.

    The signal goes to the process alone, not its group: dramatiq's main process forwards a
    SIGTERM to its worker processes, and a worker that receives it twice (once from the group,
    once forwarded) treats the second as "kill now". SIGKILL, the fallback or ``sig`` itself,
    goes to the whole group when the process leads one (started with ``start_new_session``),
    so its children die with it.
    """
    if process.poll() is not None:
        return
    try:
        if sig == signal.SIGKILL:
            _kill_tree(process)
        else:
            process.send_signal(sig)
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_tree(process)
        process.wait(timeout=timeout)


def _kill_tree(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        if os.getpgid(process.pid) == process.pid:
            os.killpg(process.pid, signal.SIGKILL)
        else:
            process.kill()


def start_web_server(
    *, port: int, env: dict[str, str], log_path: os.PathLike | str, workers: int | None = None
) -> subprocess.Popen:
    """The web application (admin, webhook receiver) as ``make serve`` runs it (gunicorn with
    ``gunicorn.conf.py``) on 127.0.0.1:``port``, in its own session, logging to ``log_path``;
    ``workers``: instead of its default. It answers once a worker has loaded Django."""
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    env = {**env, "PORT": str(port)}
    if workers is not None:
        env["WEB_CONCURRENCY"] = str(workers)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py"],
            cwd=root,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


class WebServerNotServing(RuntimeError):
    """The web server exited, or gave no HTTP answer in time; the message ends with its log."""


def wait_until_serving(
    process: subprocess.Popen, port: int, *, log_path: os.PathLike | str, timeout: float
) -> None:
    """Wait until the web application on 127.0.0.1:``port`` answers HTTP: any status will
    do (the receiver answers a GET with 405), as it means a worker has loaded Django."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise WebServerNotServing(f"gunicorn exited: {_tail(log_path)}")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("GET", "/webhooks/github/")
            conn.getresponse().read()
            return
        except OSError:
            time.sleep(0.1)
        finally:
            conn.close()
    raise WebServerNotServing(f"gunicorn did not answer within {timeout:.0f}s: {_tail(log_path)}")


def _tail(log_path: os.PathLike | str) -> str:
    try:
        with open(log_path, errors="replace") as log:
            return log.read()[-2000:]
    except OSError:
        return "(no log)"


def port_is_open(port: int) -> bool:
    """Something accepts connections on 127.0.0.1:``port``."""
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0
