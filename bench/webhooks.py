"""The webhook receiver's throughput: signed ``pull_request`` deliveries sent by concurrent
clients to ``make serve``'s gunicorn (its default workers and threads), over loopback HTTP.

Every delivery has its own GUID and a newer ``updated_at`` than the last one of its PR, so
each is a real write (GUID insert, PR upsert, repository touch), none a replay or stale skip.
Bodies are the emulator's REST PR and repository JSON (about 20 KB, as GitHub's are), built
and signed before the clock starts. ``python -m bench.webhooks`` runs this part alone.
"""

from __future__ import annotations

import copy
import http.client
import os
import runpy
import secrets
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from devtools.github_emulator import GitHubEmulator
from devtools.processes import free_port, start_web_server, stop_process, wait_until_serving
from devtools.webhook_payloads import pull_request_payload, signed

ROOT = Path(__file__).resolve().parent.parent
REPO = "bench/webhooks"
PULLS = 200
CLIENTS = 16
DELIVERIES = 3000
TARGET_PER_SECOND = 300
STARTUP_SECONDS = 60


@dataclass
class ReceiverFigures:
    deliveries: int
    clients: int
    workers: int
    threads: int
    seconds: float
    statuses: Counter[int]
    latencies: list[float]  # seconds, one per delivery
    stored: int  # delivery records in the database afterwards
    body_bytes: int  # mean
    server_cpu_seconds: float  # gunicorn's processes, during the timed deliveries

    @property
    def cpu_ms_per_delivery(self) -> float:
        return self.server_cpu_seconds * 1000 / max(self.deliveries, 1)

    @property
    def per_second(self) -> float:
        return self.deliveries / self.seconds if self.seconds else float("inf")

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def _track(emulator: GitHubEmulator) -> None:
    from apps.integrations.models import GitHubIntegration, IntegrationCredential, TrackedRepository
    from apps.teams.models import Team

    repo = emulator.get_repo(REPO)
    team, _ = Team.objects.get_or_create(slug="webhooks", defaults={"name": "Webhooks"})
    integration, _ = GitHubIntegration.objects.get_or_create(
        team=team, defaults={"account_login": "bench"}
    )
    IntegrationCredential.objects.get_or_create(
        integration=integration, defaults={"access_token": "ghp_" + secrets.token_hex(18)}
    )
    TrackedRepository.objects.get_or_create(
        team=team, integration=integration, github_repo_id=repo.id, full_name=repo.full_name
    )


def _bodies(emulator: GitHubEmulator, count: int, secret: str) -> list[tuple[bytes, dict]]:
    now = emulator.now()
    emulator.generate_pulls(REPO, PULLS, start=now - timedelta(days=30), step=timedelta(hours=1))
    templates = [pull_request_payload(emulator, REPO, n, action="synchronize") for n in
                 range(1, PULLS + 1)]  # fmt: skip
    out = []
    for index in range(count):
        payload = copy.copy(templates[index % PULLS])
        payload["pull_request"] = dict(payload["pull_request"])
        payload["pull_request"]["updated_at"] = (now + timedelta(seconds=index)).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        )
        delivery = signed(payload, event="pull_request", secret=secret)
        out.append((delivery.body, delivery.headers))
    return out


def _start_gunicorn(port: int, secret: str, log: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "GITHUB_WEBHOOK_SECRET": secret,
        "ALLOWED_HOSTS": "127.0.0.1",
        "LOG_LEVEL": "WARNING",
    }
    return start_web_server(port=port, env=env, log_path=log)


def _send_all(port: int, bodies: list, clients: int) -> tuple[Counter[int], list[float], float]:
    statuses: Counter[int] = Counter()
    latencies: list[float] = []
    lock = threading.Lock()
    queue = iter(bodies)

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine: list[tuple[int, float]] = []
        while True:
            with lock:
                item = next(queue, None)
            if item is None:
                break
            body, headers = item
            started = time.perf_counter()
            try:
                conn.request("POST", "/webhooks/github/", body=body, headers=headers)
                answer = conn.getresponse()
                answer.read()
                status = answer.status
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                status = 0
            mine.append((status, time.perf_counter() - started))
        conn.close()
        with lock:
            for status, seconds in mine:
                statuses[status] += 1
                latencies.append(seconds)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses, latencies, time.perf_counter() - started


def receiver_throughput(
    emulator: GitHubEmulator, *, deliveries: int, workdir: Path, clients: int = CLIENTS
) -> ReceiverFigures:
    """Send ``deliveries`` signed deliveries from ``clients`` threads to a fresh gunicorn.

    Needs Django set up (the bench database); gunicorn runs as ``make serve`` runs it, on the
    same database (``DATABASE_URL`` in this process's environment).
    """
    from apps.integrations.models import WebhookDelivery

    secret = secrets.token_urlsafe(24)
    emulator.add_repo(REPO)
    _track(emulator)
    bodies = _bodies(emulator, deliveries, secret)
    port = free_port()
    log = workdir / "gunicorn.log"
    process = _start_gunicorn(port, secret, log)
    try:
        wait_until_serving(process, port, log_path=log, timeout=STARTUP_SECONDS)
        # Each worker's first requests load what preloading could not (connections, lazy
        # imports); they are sent but not timed.
        warmup = bodies[: clients * 4]
        _send_all(port, warmup, clients)
        cpu_before = _cpu_seconds(process.pid)
        statuses, latencies, seconds = _send_all(port, bodies[len(warmup) :], clients)
        cpu = _cpu_seconds(process.pid) - cpu_before
    finally:
        stop_process(process)
    config = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    return ReceiverFigures(
        deliveries=len(latencies),
        clients=clients,
        workers=config["workers"],
        threads=config["threads"],
        seconds=seconds,
        statuses=statuses,
        latencies=latencies,
        stored=WebhookDelivery.objects.count(),
        body_bytes=int(statistics.mean(len(b) for b, _ in bodies)),
        server_cpu_seconds=cpu,
    )


def _cpu_seconds(master: int) -> float:
    """CPU time (user + system) gunicorn's master and workers have used so far. On a shared
    machine the rate depends on what else runs; the CPU per delivery much less."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        pid, ppid = int(stat.parent.name), int(fields[1])
        if master in (pid, ppid):
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def main() -> int:
    """This benchmark alone, on a fresh SQLite database in ``.bench/``."""
    from bench.runtime import fresh_workdir, setup_django

    deliveries = int(os.environ.get("BENCH_WEBHOOK_DELIVERIES", str(DELIVERIES)))
    workdir = fresh_workdir()
    with GitHubEmulator() as emulator:
        setup_django(github_api_url=emulator.api_url, redis_url="redis://127.0.0.1:1/0")
        figures = receiver_throughput(emulator, deliveries=deliveries, workdir=workdir)
    print(describe(figures))
    return 0


def table_rows(number: str, f: ReceiverFigures) -> list[tuple[str, ...]]:
    """Rows for ``make bench``'s table (no baseline: the original design had no receiver)."""
    return [
        (number, f"webhook receiver, {f.deliveries:,} signed deliveries", "deliveries/s",
         f"{f.per_second:,.0f}", "—", "—"),
        ("", f"(gunicorn {f.workers} workers × {f.threads} threads, {f.clients} clients)",
         "answer p50 / p99", f"{f.percentile(0.5) * 1000:,.0f} / "
         f"{f.percentile(0.99) * 1000:,.0f} ms", "—", "—"),
        ("", "", "server CPU per delivery", f"{f.cpu_ms_per_delivery:.2f} ms", "—", "—"),
    ]  # fmt: skip


def target_row(f: ReceiverFigures) -> tuple[str, bool, str]:
    ok = f.per_second >= TARGET_PER_SECOND and set(f.statuses) == {200}
    return (
        f"webhook receiver ≥ {TARGET_PER_SECOND} deliveries/s",
        ok,
        f"{f.per_second:,.0f}/s, p99 {f.percentile(0.99) * 1000:,.0f} ms, "
        f"statuses {dict(sorted(f.statuses.items()))}",
    )


def describe(f: ReceiverFigures) -> str:
    return (
        f"{f.deliveries:,} deliveries ({f.body_bytes / 1024:,.0f} KiB each) from {f.clients} "
        f"clients to gunicorn {f.workers} workers x {f.threads} threads: "
        f"{f.per_second:,.0f} deliveries/s, answer time p50 {f.percentile(0.5) * 1000:,.0f} ms, "
        f"p99 {f.percentile(0.99) * 1000:,.0f} ms, max {max(f.latencies) * 1000:,.0f} ms, "
        f"server CPU {f.cpu_ms_per_delivery:.2f} ms per delivery; "
        f"statuses {dict(sorted(f.statuses.items()))}; {f.stored:,} delivery records stored"
    )


if __name__ == "__main__":
    sys.exit(main())
