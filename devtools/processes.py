"""Starting and stopping the helper processes of tests, the demo and the benchmark."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess


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


def port_is_open(port: int) -> bool:
    """Something accepts connections on 127.0.0.1:``port``."""
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0
