"""End to end: a real redis-server, real worker processes, the scheduler, the emulator."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from datetime import timedelta

import pytest

from apps.integrations.models import PullRequest, TrackedRepository
from devtools.processes import stop_process as stop
from tests import builders
from tests.processes import ROOT, manage, process_env, start, wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def worker(env: dict[str, str], log):
    return start(
        [sys.executable, "manage.py", "rundramatiq", "--processes", "1", "--threads", "4"],
        env,
        log,
    )


def statuses() -> set[str]:
    return set(TrackedRepository.objects.values_list("sync_status", flat=True))


def all_synced() -> bool:
    """Every repository finished a sync (idle with a last_sync_at)."""
    return (
        statuses() == {"idle"}
        and not TrackedRepository.objects.filter(last_sync_at__isnull=True).exists()
    )


def test_scheduler_fanout_and_a_worker_sync_every_repository(
    emulator, redis_url, days_ago, tmp_path
):
    names = ["acme/api", "acme/web", "globex/app", "globex/docs"]
    for name in names:
        emulator.generate_pulls(name, 120, start=days_ago(30), step=timedelta(hours=3))
        emulator.generate_issues(name, 40, start=days_ago(20), step=timedelta(hours=5))
        builders.tracked_repo(emulator, name, team_slug=name.split("/")[0])
    env = process_env(emulator, REDIS_URL=redis_url)
    log = tmp_path / "worker.log"
    process = worker(env, log)
    try:
        once = subprocess.run(
            [sys.executable, "-m", "scheduler", "--once"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert once.returncode == 0, once.stderr

        wait_until(all_synced, timeout=90, what="every repository synced", log=log)
    finally:
        stop(process)

    assert PullRequest.objects.count() == 4 * 120
    for repo in TrackedRepository.objects.all():
        assert repo.last_sync_at is not None and repo.last_sync_error == ""
        assert PullRequest.objects.filter(tracked_repo=repo).count() == 120


def test_rate_limited_repository_waits_for_the_reset_then_completes(
    emulator, redis_url, days_ago, tmp_path
):
    emulator.generate_pulls("acme/api", 150, start=days_ago(30), step=timedelta(hours=3))
    repo = builders.tracked_repo(emulator, "acme/api")
    limit = {}

    def one_query_left_when_the_sync_starts(req):
        # Armed by the sync's first listing, not now: on a loaded machine the worker can
        # take longer to boot than the reset is away, and the sync would never meet it.
        if req.path.endswith("/issues") and not limit:
            limit["reset_at"] = (emulator.now() + timedelta(seconds=6)).replace(microsecond=0)
            emulator.set_graphql_rate_limit(builders.TOKEN, remaining=1, reset_at=limit["reset_at"])

    emulator.add_hook(one_query_left_when_the_sync_starts)
    env = process_env(emulator, REDIS_URL=redis_url)
    log = tmp_path / "worker.log"
    process = worker(env, log)
    try:
        assert manage(emulator, "sync_all", REDIS_URL=redis_url).returncode == 0
        wait_until(lambda: statuses() == {"rate_limited"}, timeout=30, what="deferral", log=log)
        waiting = TrackedRepository.objects.get(pk=repo.pk)
        wait_until(all_synced, timeout=60, what="resume", log=log)
    finally:
        stop(process)

    reset_at = limit["reset_at"]
    assert waiting.last_sync_error.startswith(f"rate limited until {reset_at:%Y-%m-%dT%H:%M}")
    assert PullRequest.objects.count() == 150
    fetched = builders.detail_fetches(emulator)
    assert len(fetched) == len(set(fetched)) == 150  # nothing fetched twice


def test_worker_killed_mid_sync_loses_nothing(emulator, redis_url, days_ago, tmp_path):
    emulator.generate_pulls("acme/api", 400, start=days_ago(60), step=timedelta(hours=2))
    builders.tracked_repo(emulator, "acme/api")
    # A dead worker's messages are requeued by broker maintenance once its heartbeat is older
    # than heartbeat_timeout; make both quick so the test does not wait minutes.
    env = process_env(
        emulator,
        REDIS_URL=redis_url,
        DRAMATIQ_HEARTBEAT_TIMEOUT_MS="2000",
        DRAMATIQ_MAINTENANCE_CHANCE="1000000",
        SYNC_LEASE_SECONDS="5",
    )
    first = worker(env, tmp_path / "first.log")
    details = {"n": 0}
    killed = threading.Event()

    def kill_mid_page(req):
        if builders.is_detail_request(req):
            details["n"] += len(req.graphql_numbers) if req.path.endswith("/graphql") else 1
            if details["n"] >= 150 and not killed.is_set():
                killed.set()
                os.killpg(first.pid, signal.SIGKILL)

    emulator.add_hook(kill_mid_page)
    second = None
    try:
        assert manage(emulator, "sync_all", REDIS_URL=redis_url).returncode == 0
        wait_until(killed.is_set, timeout=60, what="the kill", log=tmp_path / "first.log")
        first.wait(timeout=10)
        emulator.remove_hook(kill_mid_page)
        assert PullRequest.objects.count() == 100  # page 1, committed with its checkpoint

        second = worker(env, tmp_path / "second.log")
        wait_until(all_synced, timeout=90, what="resume", log=tmp_path / "second.log")
    finally:
        stop(first, sig=signal.SIGKILL)
        if second is not None:
            stop(second)

    assert PullRequest.objects.count() == 400
    repo = TrackedRepository.objects.get()
    assert repo.sync_checkpoint is None and repo.sync_lease_owner == ""
    # At most the interrupted page was done again.
    assert len(builders.detail_fetches(emulator)) <= 400 + 100
