"""Fault injection with real worker processes: whatever happens to a worker, nothing is lost.

Each case ends by comparing every pull request in the database with the emulator's truth and
by checking that no repository is left in a status that is not true.
"""

from __future__ import annotations

import os
import signal
import threading
from datetime import timedelta

import psycopg
import pytest
from django.db import connection
from django.db.models import Max
from django.utils import timezone

from apps.integrations.models import PullRequest, TrackedRepository
from devtools.processes import stop_process
from tests import builders
from tests.processes import DEADLINE, manage, process_env, start_worker, wait_until

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.slow,
    pytest.mark.fault,
    pytest.mark.usefixtures("process_logs"),
]

REPO = "acme/api"


def quick_takeover_env(emulator, redis_url: str, *, lease_seconds: int) -> dict[str, str]:
    """Workers that notice a silent peer within seconds: its unacked messages are requeued by
    broker maintenance once its heartbeat is older than 2 s (maintenance on every command),
    and its repository lease lapses after ``lease_seconds``."""
    return process_env(
        emulator,
        REDIS_URL=redis_url,
        SYNC_LEASE_SECONDS=str(lease_seconds),
        DRAMATIQ_HEARTBEAT_TIMEOUT_MS="2000",
        DRAMATIQ_MAINTENANCE_CHANCE="1000000",
    )


def finished(repo_id: int) -> bool:
    """A pass finished: idle with a watermark."""
    checkpoint, watermark, _, status, *_ = position(repo_id)
    return status == "idle" and watermark is not None and checkpoint is None


def connection_url() -> str:
    """A libpq URL of the test database, for a session of our own."""
    settings = connection.settings_dict
    return (
        f"postgresql://{settings['USER']}:{settings['PASSWORD'] or ''}@{settings['HOST']}:"
        f"{settings['PORT']}/{settings['NAME']}"
    )


def position(repo_id: int) -> tuple:
    return TrackedRepository.objects.values_list(
        "sync_checkpoint",
        "sync_watermark",
        "sync_listing_etag",
        "sync_status",
        "last_sync_error",
        "last_sync_at",
    ).get(pk=repo_id)


def test_worker_paused_past_its_lease_writes_nothing_after_another_took_over(
    emulator, redis_url, days_ago, tmp_path
):
    # Given a large repository, and workers that give up on a silent peer quickly
    emulator.generate_pulls(REPO, 600, start=days_ago(60), step=timedelta(hours=2))
    repo = builders.tracked_repo(emulator, REPO)
    env = quick_takeover_env(emulator, redis_url, lease_seconds=3)
    a = start_worker(env, tmp_path / "a.log", host="host-a")
    paused = threading.Event()

    def pause_a_mid_sync(request):
        # A's third listing: it has stored two pages with their checkpoint.
        listings = emulator.count_requests(path_contains="/issues")
        if "/issues" in request.path and listings == 2 and not paused.is_set():
            paused.set()
            os.killpg(a.pid, signal.SIGSTOP)

    emulator.add_hook(pause_a_mid_sync)
    b = None
    try:
        assert manage(emulator, "sync_all", REDIS_URL=redis_url).returncode == 0
        wait_until(paused.is_set, timeout=DEADLINE, what="A mid-sync", log=tmp_path / "a.log")
        stored_by_a = PullRequest.objects.count()

        # When A stays paused past its lease, worker B (another machine) takes over ...
        b = start_worker(env, tmp_path / "b.log", host="host-b")
        wait_until(
            lambda: finished(repo.pk),
            timeout=DEADLINE,
            what="B to finish the sync",
            log=tmp_path / "b.log",
        )
        finished_by_b = position(repo.pk)
        resumed_at = timezone.now()
        # ... and A resumes, mid-request, with its old position in memory
        os.killpg(a.pid, signal.SIGCONT)
        wait_until(
            lambda: "repo_sync.lease_lost" in (tmp_path / "a.log").read_text(),
            timeout=DEADLINE,
            what="A to notice it lost the lease",
            log=tmp_path / "a.log",
        )
    finally:
        if paused.is_set():
            os.killpg(a.pid, signal.SIGCONT)
        stop_process(a)
        if b is not None:
            stop_process(b)

    # Then A wrote nothing after it resumed: the position and status are B's, no row changed
    assert 100 <= stored_by_a < 600
    assert position(repo.pk) == finished_by_b
    assert finished_by_b[0] is None  # B's finished pass, not A's stale checkpoint
    newest_write = PullRequest.objects.aggregate(newest=Max("updated_at"))["newest"]
    assert newest_write < resumed_at
    builders.assert_matches_github(emulator, repo)

    # And an incremental sync after some edits brings the database to GitHub's truth
    for number in (1, 300, 600):
        emulator.update(REPO, number, title=f"Edited #{number}")
    result = manage(emulator, "sync_repo", REPO)
    assert result.returncode == 0, result.stderr
    builders.assert_matches_github(emulator, repo)
    assert position(repo.pk)[3] == "idle"


def test_worker_killed_mid_sync_is_redelivered_and_resumes_from_its_checkpoint(
    emulator, redis_url, days_ago, tmp_path
):
    emulator.generate_pulls(REPO, 400, start=days_ago(60), step=timedelta(hours=2))
    repo = builders.tracked_repo(emulator, REPO)
    # The two workers are two machines: only the lease's expiry frees it.
    env = quick_takeover_env(emulator, redis_url, lease_seconds=5)
    first = start_worker(env, tmp_path / "first.log", host="host-a")
    killed: dict[str, int] = {}
    details = {"n": 0}

    def kill_mid_page(request):
        # SIGKILL while the second page's details are being fetched.
        if builders.is_detail_request(request) and not killed:
            details["n"] += len(request.graphql_numbers) or 1
            if details["n"] >= 150:
                killed["seq"] = request.seq
                os.killpg(first.pid, signal.SIGKILL)

    emulator.add_hook(kill_mid_page)
    second = None
    try:
        assert manage(emulator, "sync_all", REDIS_URL=redis_url).returncode == 0
        wait_until(lambda: bool(killed), timeout=DEADLINE, what="the kill")
        first.wait(timeout=DEADLINE)
        assert PullRequest.objects.count() == 100  # page 1, committed with its checkpoint

        second = start_worker(env, tmp_path / "second.log", host="host-b")
        wait_until(
            lambda: finished(repo.pk),
            timeout=DEADLINE,
            what="the redelivered message to finish the sync",
            log=tmp_path / "second.log",
        )
    finally:
        stop_process(first, sig=signal.SIGKILL)
        if second is not None:
            stop_process(second)

    builders.assert_matches_github(emulator, repo)
    repo.refresh_from_db()
    assert repo.sync_checkpoint is None and repo.sync_lease_owner == ""
    # Only the interrupted page was done again: pages 2 to 4, 300 details, not 400.
    assert len(builders.detail_fetches(emulator, after=killed["seq"])) == 300


@pytest.mark.postgres_only
def test_database_connections_cut_mid_sync_roll_back_the_page_and_the_retry_completes(
    emulator, redis_url, days_ago, tmp_path
):
    # What a PostgreSQL restart does to its clients: every session ends, open transactions
    # roll back. Cut the worker's session while it fetches the second page's details.
    emulator.generate_pulls(REPO, 400, start=days_ago(60), step=timedelta(hours=2))
    repo = builders.tracked_repo(emulator, REPO)
    env = quick_takeover_env(emulator, redis_url, lease_seconds=5)
    ours = connection.cursor().connection.info.backend_pid
    cut: dict[str, int] = {}

    def restart_postgres(request):
        if builders.is_detail_request(request) and len(cut) == 0:
            details = emulator.count_requests(path_contains="/graphql")
            if details == 1:  # the second page's query (the first is logged already)
                with psycopg.connect(connection_url(), autocommit=True) as admin:
                    cut["sessions"] = admin.execute(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid NOT IN "
                        "(pg_backend_pid(), %s)",
                        [ours],
                    ).fetchone()[0]
                cut["seq"] = request.seq

    emulator.add_hook(restart_postgres)
    process = start_worker(env, tmp_path / "worker.log", host="host-a")
    try:
        assert manage(emulator, "sync_all", REDIS_URL=redis_url).returncode == 0
        wait_until(lambda: bool(cut), timeout=DEADLINE, what="the cut", log=tmp_path / "worker.log")
        wait_until(
            lambda: finished(repo.pk),
            timeout=DEADLINE,
            what="the retried sync to finish",
            log=tmp_path / "worker.log",
        )
    finally:
        stop_process(process)

    assert cut["sessions"] >= 1
    log = (tmp_path / "worker.log").read_text()
    assert "OperationalError" in log  # the write failed, and was retried
    builders.assert_matches_github(emulator, repo)
    # The page being written when the session died was rolled back whole: no detail of the
    # first page was fetched again, the second page's were (once more).
    fetched_after = builders.detail_fetches(emulator, after=cut["seq"] - 1)
    assert sorted(set(fetched_after)) == list(range(101, 401))
