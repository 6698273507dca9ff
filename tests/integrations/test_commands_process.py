"""The commands as real processes: exit codes, no tracebacks, and a SIGKILL mid-sync."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from datetime import timedelta

import pytest

from apps.integrations.models import PullRequest, TrackedRepository
from tests import builders
from tests.processes import ROOT, manage, process_env, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

REPO = "acme/widgets"


def test_track_and_sync_work_from_the_shell_with_redis_unreachable(emulator, days_ago):
    emulator.generate_pulls(REPO, 30, start=days_ago(5), step=timedelta(hours=1))

    tracked = manage(emulator, "track_repo", REPO, "--team", "acme")
    synced = manage(emulator, "sync_repo", REPO)

    assert tracked.returncode == 0, tracked.stderr
    assert synced.returncode == 0, synced.stderr
    assert "30 PRs upserted" in synced.stdout
    assert PullRequest.objects.count() == 30


def test_bad_input_exits_1_with_one_line_and_no_traceback(emulator):
    result = manage(emulator, "track_repo", "not a repo", "--team", "acme")

    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stdout == ""


def test_rate_limited_sync_exits_75_from_the_shell(emulator, days_ago):
    emulator.generate_pulls(REPO, 50, start=days_ago(5), step=timedelta(hours=1))
    builders.tracked_repo(emulator, REPO)
    emulator.set_rate_limit(builders.TOKEN, remaining=0)

    result = manage(emulator, "sync_repo", REPO)

    assert result.returncode == 75
    assert "rate limit" in result.stderr and "Traceback" not in result.stderr


def test_sync_repo_killed_mid_sync_resumes_from_its_checkpoint(emulator, days_ago):
    emulator.generate_pulls(REPO, 350, start=days_ago(30), step=timedelta(minutes=30))
    builders.tracked_repo(emulator, REPO)
    process: dict[str, subprocess.Popen] = {}
    details = {"n": 0}
    killed = threading.Event()
    killing_request = {}

    def kill_mid_page(req):
        # SIGKILL while the second page's details are being fetched: no handler, no
        # cleanup, nothing flushed; exactly what an OOM kill or a lost machine does.
        if builders.is_detail_request(req):
            details["n"] += len(req.graphql_numbers) if req.path.endswith("/graphql") else 1
            if details["n"] >= 150 and not killed.is_set():
                killing_request["seq"] = req.seq
                killed.set()
                os.kill(process["sync"].pid, signal.SIGKILL)

    emulator.add_hook(kill_mid_page)
    process["sync"] = subprocess.Popen(
        [sys.executable, "manage.py", "sync_repo", REPO],
        cwd=ROOT,
        env=process_env(emulator),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    process["sync"].communicate(timeout=120)
    assert process["sync"].returncode == -signal.SIGKILL
    emulator.remove_hook(kill_mid_page)
    repo = TrackedRepository.objects.get()
    assert repo.sync_checkpoint is not None and repo.sync_watermark is None
    assert PullRequest.objects.count() == 100  # the first page, committed with its checkpoint
    # The emulator logs a request once it has answered it: the one the kill interrupted
    # must be logged before the log is cleared, or it counts as the resumed sync's.
    wait_until(
        lambda: any(r.seq == killing_request["seq"] for r in emulator.requests),
        timeout=10,
        what="the emulator to log the interrupted request",
    )
    emulator.clear_requests()

    resumed = manage(emulator, "sync_repo", REPO)

    assert resumed.returncode == 0, resumed.stderr
    assert PullRequest.objects.count() == 350
    # Only the interrupted page is done again: 250 details, not 350.
    assert len(builders.detail_fetches(emulator)) == 250
    repo.refresh_from_db()
    assert repo.sync_checkpoint is None and repo.sync_status == "idle"


def test_rejected_token_is_one_line_on_stderr_from_the_shell(emulator):
    emulator.add_repo(REPO)

    result = manage(emulator, "track_repo", REPO, "--team", "acme", GITHUB_TOKEN="ghp_wrong")

    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "rejected the token" in result.stderr
    assert "ghp_wrong" not in result.stderr
