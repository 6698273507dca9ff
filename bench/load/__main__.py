"""`make load` / `python -m bench.load`: the fleet load benchmark (README "Fleet load
benchmark").

Starts a throwaway PostgreSQL and redis-server, the GitHub emulator in this process, the
workers (``rundramatiq``) and the scheduler; tracks N repositories over K teams; runs a
first-sync round, a daily incremental round and an idle round, each fanned out with
``manage.py sync_all``; prints one table. Figures, not verdicts: the exit code is 0 whenever
the run finished. Everything it started is stopped on success, failure and Ctrl-C.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench.load.config import ConfigError, LoadConfig, LoadError
from bench.runtime import ROOT, WORKDIR, BenchSetupError, setup_django
from devtools.github_emulator import GitHubEmulator
from devtools.localpostgres import LocalPostgresError, start_postgres_server
from devtools.localredis import LocalRedisError, start_redis_server
from devtools.processes import free_port, stop_process

WORKER_READY = "ready for action"
START_DEADLINE = 120  # seconds for the workers to boot on a loaded 2-core machine


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """A process in its own session (a terminal's Ctrl-C reaches only us; we stop it)."""
    with log.open("ab") as out:
        return subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def _wait_for_workers(workers: subprocess.Popen, log: Path, processes: int) -> None:
    deadline = time.monotonic() + START_DEADLINE
    while log.read_text(errors="replace").count(WORKER_READY) < processes:
        if workers.poll() is not None or time.monotonic() > deadline:
            raise LoadError(f"the workers did not start; see {log}")
        time.sleep(0.2)


def _workdir() -> Path:
    """Where the logs go: ``LOAD_WORKDIR``, else ``.bench/load/`` (ignored by git)."""
    custom = os.environ.get("LOAD_WORKDIR", "").strip()
    if custom:
        path = Path(custom)
    else:
        WORKDIR.mkdir(exist_ok=True)
        (WORKDIR / ".gitignore").write_text("*\n")
        path = WORKDIR / "load"
    path.mkdir(parents=True, exist_ok=True)
    for old in path.glob("*.log"):
        old.unlink()
    return path


def _on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    try:
        config = LoadConfig.from_environment()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _on_sigterm)
    # Also when started in the background by a shell, which ignores SIGINT for it.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    logs = _workdir()
    started: list[subprocess.Popen] = []  # stopped in reverse order
    postgres = redis_server = None
    emu = GitHubEmulator(
        latency=config.latency_ms / 1000,
        rate_window_seconds=config.rate_window_seconds,
        error_rate=config.error_rate,
        error_seed=config.seed,
    )
    try:
        postgres = start_postgres_server(log_directory=logs, new_session=True)
        redis_server = start_redis_server(logs / "redis", new_session=True)
        emu.start()
        os.environ.update(config.process_settings)
        setup_django(
            github_api_url=emu.api_url, redis_url=redis_server.url, database_url=postgres.url
        )
        from bench.load import fleet as fleet_module
        from bench.load import report, rounds

        rounds.say(f"seeding {config.repos:,} repositories over {config.teams} teams")
        fleet = fleet_module.build(emu, config)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        # One worker group, so one exporter (its own port and directory): worker-thread
        # utilisation is its message-duration sum over the group's capacity.
        metrics_port = free_port()
        metrics_db = logs / "worker-metrics"
        metrics_db.mkdir(exist_ok=True)
        workers_log = logs / "workers.log"
        workers = _start(
            [sys.executable, "manage.py", "rundramatiq"]
            + ["--processes", str(config.workers), "--threads", str(config.threads)],
            {
                **env,
                "WORKER_METRICS": "true",
                "dramatiq_prom_host": "127.0.0.1",
                "dramatiq_prom_port": str(metrics_port),
                "dramatiq_prom_db": str(metrics_db),
            },
            workers_log,
        )
        started.append(workers)
        started.append(_start([sys.executable, "-m", "scheduler"], env, logs / "scheduler.log"))
        _wait_for_workers(workers, workers_log, config.workers)
        runner = rounds.Runner(
            config=config,
            emu=emu,
            fleet=fleet,
            redis_url=redis_server.url,
            root=ROOT,
            env=env,
            workers=workers,
            logs=logs,
            exporter_urls=[f"http://127.0.0.1:{metrics_port}/metrics"],
        )
        first = runner.run_round(
            "round 1",
            [
                rounds.Injection(0.2, runner.drain_dry_tokens),
                rounds.Injection(0.3, runner.revoke),
                rounds.Injection(0.5, runner.sync_now),
            ],
        )
        changed = fleet_module.change_some(emu, config, fleet)
        daily = runner.run_round("round 2")
        daily.changed = changed
        idle = runner.run_round("round 3")
        sizes = rounds.sizes(runner)
        text = report.render(
            config=config,
            fleet=fleet,
            results=[first, daily, idle],
            sizes=sizes,
            database=f"PostgreSQL {postgres.url.rsplit('/', 1)[-1]!r} (throwaway cluster)",
            driver_peak_rss=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        )
    except (LoadError, BenchSetupError, LocalPostgresError, LocalRedisError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: everything this run started is stopped", file=sys.stderr)
        return 130
    finally:
        _stop_everything(started, emu, redis_server, postgres)
    print(text)
    return 0


def _stop_everything(started, emu, redis_server, postgres) -> None:
    # A second Ctrl-C during clean-up must not leave processes behind.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    for process in reversed(started):
        stop_process(process, timeout=30)
    emu.stop()
    if redis_server is not None:
        redis_server.stop()
    if postgres is not None:
        if "django" in sys.modules:
            from django.db import connections

            connections.close_all()
        postgres.stop()


if __name__ == "__main__":
    sys.exit(main())
