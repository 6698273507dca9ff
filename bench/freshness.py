"""Webhook freshness: from an edit on GitHub (the emulator) to the row in our database.

The product's web application serves the receiver under gunicorn, as in production; the
emulator's hook delivers a signed ``pull_request`` event from its delivery thread after each
edit. Edits are made one at a time and each is timed until the bench process reads the new
title from the database: delivery, signature check, the upsert and its commit, all included.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass

from bench.runtime import WORKDIR, BenchSetupError
from devtools.github_emulator import GitHubEmulator
from devtools.processes import (
    WebServerNotServing,
    free_port,
    start_web_server,
    stop_process,
    wait_until_serving,
)

REPO = "bench/freshness"
PULLS = 20  # edits go round these
POLL_SECONDS = 0.002
EDIT_TIMEOUT = 30.0  # an edit not seen by then counts as lost
STARTUP_SECONDS = 120.0  # gunicorn loading Django on a busy machine
GOAL_P99_SECONDS = 1.0


@dataclass(frozen=True)
class Freshness:
    edits: int
    seconds: list[float]  # one per edit that arrived
    lost: int
    workers: int

    def quantile(self, q: float) -> float:
        if not self.seconds:
            return float("inf")
        if len(self.seconds) == 1:
            return self.seconds[0]
        return statistics.quantiles(self.seconds, n=100, method="inclusive")[int(q * 100) - 1]

    @property
    def p50(self) -> float:
        return self.quantile(0.50)

    @property
    def p99(self) -> float:
        return self.quantile(0.99)


def table_rows(number: str, f: Freshness) -> list[tuple[str, ...]]:
    """Rows for ``make bench``'s table (no baseline: the original design only polled)."""
    return [
        (number, f"webhook freshness, {f.edits:,} edits", "edit → row p50 / p99",
         f"{f.p50 * 1000:,.0f} / {f.p99 * 1000:,.0f} ms", "—", "—"),
        ("", f"(emulator → gunicorn {f.workers} workers → db)", "edits lost",
         f"{f.lost:,}", "—", "—"),
    ]  # fmt: skip


def target_row(f: Freshness) -> tuple[str, bool, str]:
    return (
        f"webhook freshness p99 < {GOAL_P99_SECONDS:g} s",
        f.p99 < GOAL_P99_SECONDS and not f.lost,
        f"p50 {f.p50 * 1000:,.0f} ms, p99 {f.p99 * 1000:,.0f} ms, "
        f"max {max(f.seconds, default=0) * 1000:,.0f} ms, {f.lost} lost",
    )


def describe(f: Freshness) -> str:
    return (
        f"{f.edits:,} edits one at a time (round {PULLS} PRs) in the in-process emulator, each "
        f"timed from the edit until this process reads the new title in the database: the "
        f"emulator's delivery thread signs and POSTs the pull_request event to the receiver "
        f"under `make serve`'s gunicorn ({f.workers} workers), which upserts the row; p50 "
        f"{f.p50 * 1000:,.1f} ms, p99 {f.p99 * 1000:,.1f} ms, max "
        f"{max(f.seconds, default=0) * 1000:,.1f} ms (polled every {POLL_SECONDS * 1000:g} ms), "
        f"{f.lost} not seen within {EDIT_TIMEOUT:g} s"
    )


def measure(emu: GitHubEmulator, *, edits: int, token: str) -> Freshness:
    """Needs Django set up (``bench.runtime.setup_django``) with ``GITHUB_WEBHOOK_SECRET``."""
    from django.conf import settings

    from apps.integrations.models import PullRequest
    from apps.integrations.services.webhook_registration import webhook_register
    from bench.scenarios import track

    if not settings.GITHUB_WEBHOOK_SECRETS:
        raise BenchSetupError("GITHUB_WEBHOOK_SECRET must be set before Django starts")
    emu.add_token(token, login="freshness-bot")
    emu.add_repo(REPO)
    numbers = [emu.add_pull(REPO, title="seed").number for _ in range(PULLS)]
    repo = track(emu, REPO, token=token, team_slug="freshness")

    port = free_port()
    url = f"http://127.0.0.1:{port}/webhooks/github/"
    env = {**os.environ, "ALLOWED_HOSTS": "127.0.0.1"}
    log = WORKDIR / "freshness-gunicorn.log"
    server = start_web_server(port=port, env=env, log_path=log)
    try:
        try:
            wait_until_serving(server, port, log_path=log, timeout=STARTUP_SECONDS)
        except WebServerNotServing as exc:
            raise BenchSetupError(str(exc)) from None
        webhook_register(tracked_repo=repo, url=url)
        seconds: list[float] = []
        lost = 0
        rows = PullRequest.objects.filter(tracked_repo=repo)
        for index in range(edits):
            number, title = numbers[index % PULLS], f"edit {index}"
            started = time.perf_counter()
            emu.update(REPO, number, title=title)
            deadline = started + EDIT_TIMEOUT
            while not rows.filter(number=number, title=title).exists():
                if time.perf_counter() > deadline:
                    lost += 1
                    break
                time.sleep(POLL_SECONDS)
            else:
                seconds.append(time.perf_counter() - started)
        emu.webhooks.wait_idle()
    finally:
        stop_process(server)
    return Freshness(edits=edits, seconds=seconds, lost=lost, workers=_workers())


def _workers() -> int:
    """The worker count ``make serve`` runs (gunicorn.conf.py reads WEB_CONCURRENCY)."""
    import runpy

    from bench.runtime import ROOT

    return int(runpy.run_path(str(ROOT / "gunicorn.conf.py"))["workers"])
