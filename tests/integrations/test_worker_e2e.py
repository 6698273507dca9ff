"""End to end: a real redis-server, real worker processes, the scheduler, the emulator.

Every wait polls a condition with a deadline far beyond what it takes on an idle machine
(Django start-ups alone can take seconds each on a busy one), and nothing timed is armed
before the processes are up. A failure shows the tail of each process's log.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta

import pytest

from apps.integrations.models import PullRequest, TrackedRepository
from devtools.processes import stop_process as stop
from tests import builders
from tests.processes import DEADLINE, ROOT, manage, process_env, start_worker, wait_until

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.slow,
    pytest.mark.usefixtures("process_logs"),
]

# How long after the rate limit is hit GitHub's reset comes: the repository shows
# rate_limited for about this long, which the test must see once (it polls every 0.1 s).
RESET_AFTER = timedelta(seconds=10)


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
    process = start_worker(env, log, threads=4)
    try:
        once = subprocess.run(
            [sys.executable, "-m", "scheduler", "--once"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=DEADLINE,
        )
        assert once.returncode == 0, once.stderr

        wait_until(all_synced, timeout=DEADLINE, what="every repository synced", log=log)
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
    # One GraphQL point: the first page's details are served and spend it, and the worker
    # learns so from the answer; the second page's are refused (by the worker's rate budget,
    # before asking) until the reset. The reset is set with the last point: set up front, it
    # could pass while the worker and sync_all are still starting, and the sync would never
    # be limited at all.
    emulator.set_graphql_rate_limit(
        builders.TOKEN, remaining=1, reset_at=emulator.now() + timedelta(hours=1)
    )
    limit: dict = {}

    def reset_soon_after_the_limit(req):
        if req.path == "/graphql" and not limit:
            if emulator.token_state(builders.TOKEN).graphql_remaining == 1:  # the last point
                limit.update(seq=req.seq, reset_at=emulator.now() + RESET_AFTER)
                emulator.set_graphql_rate_limit(
                    builders.TOKEN, remaining=1, reset_at=limit["reset_at"]
                )

    emulator.add_hook(reset_soon_after_the_limit)
    env = process_env(emulator, REDIS_URL=redis_url)
    log = tmp_path / "worker.log"
    process = start_worker(env, log, threads=4)
    try:
        assert manage(emulator, "sync_all", REDIS_URL=redis_url).returncode == 0
        wait_until(
            lambda: statuses() == {"rate_limited"}, timeout=DEADLINE, what="deferral", log=log
        )
        waiting = TrackedRepository.objects.get(pk=repo.pk)
        wait_until(all_synced, timeout=DEADLINE, what="resume", log=log)
    finally:
        stop(process)

    assert waiting.last_sync_error == f"rate limited until {limit['reset_at']:%Y-%m-%dT%H:%M:%SZ}"
    # No GraphQL query reached GitHub again before its reset, nor did GitHub refuse one.
    after_limit = [
        req.at for req in emulator.requests if req.seq > limit["seq"] and req.path == "/graphql"
    ]
    assert after_limit and min(after_limit) >= limit["reset_at"]
    assert all(req.status == 200 for req in emulator.requests)
    assert PullRequest.objects.count() == 150
    fetched = builders.detail_fetches(emulator)
    assert len(fetched) == len(set(fetched)) == 150  # nothing fetched twice
