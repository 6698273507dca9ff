"""A throwaway PostgreSQL cluster on a free loopback port, for tests, `make demo` and benchmarks.

    python -m devtools.localpostgres -- COMMAND [ARGS...]

runs COMMAND with DATABASE_URL pointing at an empty database of a fresh cluster, then stops the
cluster and deletes its files, whatever way COMMAND ends (`make test-postgres` runs pytest so).

Not used in production: there DATABASE_URL points at a managed PostgreSQL.
"""

from __future__ import annotations

import ctypes
import glob
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from devtools.processes import free_port, stop_process

# Where Debian's postgresql-NN packages put the server programs; they are not on PATH.
DEBIAN_BINDIRS = "/usr/lib/postgresql/*/bin"
SUPERUSER = "postgres"
# Nobody keeps a throwaway cluster, so it need not survive a crash: without fsync the test
# suite's many short transactions do not wait for the disk. A benchmark of writes passes
# durable=True.
NOT_DURABLE = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
# Each cluster lives in <tmp>/tformance-postgres-<owner pid>-<random>/.
PREFIX = "tformance-postgres-"
_PR_SET_PDEATHSIG = 1


class LocalPostgresError(RuntimeError):
    """PostgreSQL is missing or did not start; the message says which."""


@dataclass
class LocalPostgres:
    process: subprocess.Popen
    directory: Path
    url: str

    def stop(self, timeout: float = 15) -> None:
        """Stop the server and delete its files."""
        try:
            # SIGINT is PostgreSQL's "fast" shutdown: it ends open sessions. SIGTERM would
            # wait for every client to disconnect.
            stop_process(self.process, sig=signal.SIGINT, timeout=timeout)
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


def postgres_bindir() -> Path:
    """The directory of initdb and postgres: Debian's newest version, else the one on PATH."""
    candidates = sorted(
        (Path(d) for d in glob.glob(DEBIAN_BINDIRS) if (Path(d) / "initdb").exists()),
        key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0,
    )
    if candidates:
        return candidates[-1]
    initdb = shutil.which("initdb")
    if initdb is None:
        raise LocalPostgresError(
            "PostgreSQL is not installed (make test and make test-postgres install it)"
        )
    return Path(initdb).parent


def start_postgres_server(
    log_directory: Path | None = None,
    *,
    database: str = "tformance",
    new_session: bool = False,
    durable: bool = False,
) -> LocalPostgres:
    """Create a cluster in a new temporary directory, start it on a free loopback port and
    create ``database``. ``stop()`` deletes the cluster; its log goes to ``log_directory``
    (kept) or into the cluster's directory (deleted with it).

    As root the server runs as the ``postgres`` system user: PostgreSQL refuses to run as
    root. ``new_session`` keeps a terminal's Ctrl-C from reaching it (it would shut down
    under a command still using it). On Linux the server also shuts down when the thread
    that started it ends, so an owner killed with SIGKILL leaves no server behind (start it
    from the main thread), and the next start deletes the files such an owner left.
    """
    bindir = postgres_bindir()
    user = _server_user()
    _remove_abandoned_clusters()
    directory = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-"))
    try:
        data = directory / "data"
        data.mkdir()
        if user is not None:
            directory.chmod(0o711)  # the server's user may pass through, not list
            os.chown(data, user.pw_uid, user.pw_gid)
        as_user = _run_as(user)
        if log_directory is not None:
            log_directory.mkdir(parents=True, exist_ok=True)
        log_path = (log_directory or directory) / "postgres.log"
        with log_path.open("w") as log:
            initialised = subprocess.run(
                [bindir / "initdb", "--pgdata", data, "--username", SUPERUSER]
                + ["--auth", "trust", "--encoding", "UTF8", "--no-locale", "--no-sync"],
                cwd=data,
                stdout=log,
                stderr=subprocess.STDOUT,
                check=False,
                **as_user,
            )
            if initialised.returncode != 0:
                raise LocalPostgresError(f"initdb failed\n{_tail(log_path)}")
            port = free_port()
            options = {
                "listen_addresses": "127.0.0.1",
                "port": str(port),
                "unix_socket_directories": "",
                **({} if durable else NOT_DURABLE),
            }
            process = subprocess.Popen(
                [bindir / "postgres", "-D", data]
                + [arg for name, value in options.items() for arg in ("-c", f"{name}={value}")],
                cwd=data,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=new_session,
                preexec_fn=_stop_with_parent if sys.platform == "linux" else None,
                **as_user,
            )
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    server = LocalPostgres(
        process=process,
        directory=directory,
        url=f"postgres://{SUPERUSER}@127.0.0.1:{port}/{database}",
    )
    try:
        _create_database(port, database, process, log_path)
    except BaseException:
        server.stop()
        raise
    return server


def _server_user() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        raise LocalPostgresError(
            "running as root needs the 'postgres' system user (Debian's postgresql package "
            "creates it): PostgreSQL refuses to run as root"
        ) from None


def _run_as(user: pwd.struct_passwd | None) -> dict:
    if user is None:
        return {}
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


if sys.platform == "linux":
    _prctl = ctypes.CDLL(None, use_errno=True).prctl


def _stop_with_parent() -> None:
    # Runs in the child after its user switch, which would clear the setting: the server
    # gets a fast shutdown when its owner dies, even by SIGKILL.
    _prctl(_PR_SET_PDEATHSIG, signal.SIGINT)


def _remove_abandoned_clusters() -> None:
    """Delete the clusters of owners that died without stopping them (SIGKILL)."""
    for path in Path(tempfile.gettempdir()).glob(f"{PREFIX}*-*"):
        owner = path.name.removeprefix(PREFIX).split("-", 1)[0]
        # A server still running (outside Linux nothing stops it with its owner) keeps its
        # postmaster.pid: leave that cluster alone.
        if not owner.isdigit() or (path / "data" / "postmaster.pid").exists():
            continue
        try:
            os.kill(int(owner), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except PermissionError:
            pass  # alive, another user's


def _create_database(port: int, database: str, process: subprocess.Popen, log: Path) -> None:
    conninfo = f"host=127.0.0.1 port={port} user={SUPERUSER} dbname=postgres connect_timeout=2"
    deadline = time.monotonic() + 30
    while True:
        try:
            with psycopg.connect(conninfo, autocommit=True) as conn:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
                return
        except psycopg.OperationalError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise LocalPostgresError(
                    f"PostgreSQL did not start on port {port}\n{_tail(log)}"
                ) from None
            time.sleep(0.05)


def _tail(log: Path, lines: int = 20) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def main(argv: list[str]) -> int:
    """Run ``argv`` with DATABASE_URL set to a throwaway cluster; returns its exit code."""
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        _say("usage: python -m devtools.localpostgres -- COMMAND [ARGS...]")
        return 2
    command: subprocess.Popen | None = None

    def on_signal(signum: int, frame: object) -> None:
        if command is None:
            raise KeyboardInterrupt
        # A terminal's Ctrl-C reaches the command directly: forwarding it again would cut
        # the command's own clean-up short. SIGTERM (CI giving up) reaches only us.
        if signum == signal.SIGTERM:
            command.send_signal(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    started = time.monotonic()
    try:
        server = start_postgres_server(new_session=True)
        try:
            _say(f"localpostgres: {server.url} ({postgres_bindir()})")
            command = subprocess.Popen(argv, env={**os.environ, "DATABASE_URL": server.url})
            returncode = command.wait()
        finally:
            if command is not None and command.poll() is None:
                stop_process(command)
            server.stop()
    except LocalPostgresError as exc:
        _say(f"localpostgres: {exc}")
        return 1
    except KeyboardInterrupt:
        _say("localpostgres: interrupted; the cluster is removed")
        return 130
    _say(f"localpostgres: cluster removed after {time.monotonic() - started:.0f}s")
    return 128 - returncode if returncode < 0 else returncode


def _say(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
