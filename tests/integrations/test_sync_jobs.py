"""The sync job workers and the CLI share: lease, outcome, and the lease as a write fence."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from apps.integrations.models import PullRequest, TrackedRepository
from apps.integrations.services.sync_jobs import repository_sync_job
from tests import builders

pytestmark = pytest.mark.django_db(transaction=True)

REPO = "acme/widgets"


def run_job(repo: TrackedRepository):
    return repository_sync_job(tracked_repo_id=repo.pk, requested_at=None, time_budget=None)


class WriteLog:
    """SQL writes this thread sends from the moment ``armed`` is set."""

    def __init__(self) -> None:
        self.armed = False
        self.writes: list[str] = []

    def __call__(self, execute, sql, params, many, context):
        if self.armed and sql.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE")):
            self.writes.append(sql)
        return execute(sql, params, many, context)


def test_sync_that_stalled_past_its_lease_writes_nothing_after_another_sync_took_over(
    emulator, days_ago
):
    # Given a large repository whose sync (A) stalls past its lease after its first page ...
    emulator.generate_pulls(REPO, 350, start=days_ago(30), step=timedelta(minutes=30))
    repo = builders.tracked_repo(emulator, REPO)
    log = WriteLog()
    took_over = {}

    def stall_then_take_over(request):
        if "/issues" in request.path and not took_over:
            took_over["listing"] = request.seq
        elif "/issues" in request.path and took_over.get("listing") == request.seq - 2:
            # A's second listing (after a detail query): A has stored page 1. It stalls here,
            # its lease lapses, and sync B runs from start to finish.
            took_over["listing"] = None
            TrackedRepository.objects.filter(pk=repo.pk).update(
                sync_lease_expires_at=timezone.now() - timedelta(seconds=1)
            )
            took_over["b"] = run_job(repo)
            took_over["position"] = TrackedRepository.objects.values_list(
                "sync_checkpoint", "sync_watermark", "sync_listing_etag", "sync_status"
            ).get(pk=repo.pk)
            log.armed = True  # A resumes now

    emulator.add_hook(stall_then_take_over)

    with connection.execute_wrapper(log):
        a = run_job(repo)

    # Then B finished, and A, resumed, stopped at its first write without writing
    assert took_over["b"].action == "synced"
    assert a.action == "lease_lost"
    fence_checks = [sql for sql in log.writes if "sync_lease_expires_at" in sql]
    assert log.writes == fence_checks and len(fence_checks) == 1  # one refused fence, no write
    # ... the position and status are B's
    assert (
        TrackedRepository.objects.values_list(
            "sync_checkpoint", "sync_watermark", "sync_listing_etag", "sync_status"
        ).get(pk=repo.pk)
        == took_over["position"]
    )
    assert took_over["position"][0] is None and took_over["position"][3] == "idle"
    builders.assert_matches_github(emulator, repo)

    # And an incremental sync after some edits brings the database to GitHub's truth
    for number in (3, 150, 349):
        emulator.update(REPO, number, title=f"Edited #{number}")
    emulator.remove_hook(stall_then_take_over)
    assert run_job(repo).action == "synced"
    builders.assert_matches_github(emulator, repo)
    assert PullRequest.objects.filter(tracked_repo=repo).count() == 350


def test_sync_records_syncing_then_idle(emulator, days_ago):
    emulator.generate_pulls(REPO, 20, start=days_ago(3), step=timedelta(hours=1))
    repo = builders.tracked_repo(emulator, REPO)
    seen = []
    emulator.add_hook(
        lambda request: seen.append(
            TrackedRepository.objects.values_list("sync_status", flat=True).get(pk=repo.pk)
        )
    )

    outcome = run_job(repo)

    assert outcome.action == "synced" and set(seen) == {"syncing"}
    repo.refresh_from_db()
    assert (repo.sync_status, repo.last_sync_error) == ("idle", "")
    assert repo.sync_lease_owner == ""  # released


@pytest.mark.parametrize("change", ["inactive", "disconnected"])
def test_sync_of_a_repository_that_cannot_sync_is_skipped_without_a_request(emulator, change):
    repo = builders.tracked_repo(emulator, REPO)
    if change == "inactive":
        TrackedRepository.objects.filter(pk=repo.pk).update(is_active=False)
    else:
        repo.integration.credential.delete()

    outcome = run_job(repo)

    assert (outcome.action, outcome.reason) == ("skipped", change)
    assert emulator.requests == []


def test_failed_sync_releases_its_lease_for_the_next_one(emulator):
    repo = builders.tracked_repo(emulator, REPO)
    emulator.fail_next(status=502)

    with pytest.raises(Exception, match="502"):
        run_job(repo)

    assert TrackedRepository.objects.get(pk=repo.pk).sync_lease_owner == ""
