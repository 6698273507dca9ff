"""The sweep: statuses nothing will change any more are sent again or made true; statuses
that still hold are left alone."""

from __future__ import annotations

from datetime import datetime, timedelta

import dramatiq
import pytest
from django.utils import timezone

from apps.integrations.models import IntegrationCredential, TrackedRepository
from apps.integrations.services import sync_outcome
from apps.integrations.services.sync_lease import lease_acquire
from apps.integrations.services.sync_sweep import sweep_repositories
from apps.integrations.tasks import QUEUE, SWEEP_QUEUE, sweep_stuck_repositories
from tests import builders
from tests.builders import connected_team

pytestmark = pytest.mark.django_db


@pytest.fixture
def repo() -> TrackedRepository:
    integration = connected_team("acme", repos=1)
    return TrackedRepository.objects.get(integration=integration)


@pytest.fixture
def stuck_after(settings) -> timedelta:
    return timedelta(seconds=settings.SYNC_STUCK_AFTER_SECONDS)


def given(repo: TrackedRepository, **fields: object) -> None:
    TrackedRepository.objects.filter(pk=repo.pk).update(**fields)


def ago(delta: timedelta) -> datetime:
    return timezone.now() - delta


def reload(repo: TrackedRepository) -> TrackedRepository:
    repo.refresh_from_db()
    return repo


def test_sweep_resends_a_syncing_repository_whose_lease_lapsed(repo):
    # Given a repository left "syncing" by a worker that died ten minutes ago
    given(
        repo,
        sync_status="syncing",
        sync_status_changed_at=ago(timedelta(minutes=10)),
        sync_lease_owner="gone-host/0123456789ab:4242:feedfacecafe",
        sync_lease_taken_at=ago(timedelta(minutes=10)),
        sync_lease_expires_at=ago(timedelta(minutes=7)),
    )

    assert sweep_repositories().to_enqueue == [repo.pk]


def test_sweep_resends_a_syncing_repository_with_no_lease(repo):
    # Given a repository "syncing" with no lease at all (its failure was never recorded)
    given(repo, sync_status="syncing", sync_status_changed_at=ago(timedelta(minutes=10)))

    assert sweep_repositories().to_enqueue == [repo.pk]


def test_sweep_leaves_a_syncing_repository_with_a_live_lease_alone(repo):
    # Given a sync that has run for ten minutes and still renews its lease
    lease_acquire(tracked_repo=repo)
    sync_outcome.repository_sync_started(tracked_repo=repo)
    given(repo, sync_status_changed_at=ago(timedelta(minutes=10)))

    assert sweep_repositories().to_enqueue == []
    assert reload(repo).sync_status == "syncing"


def test_sweep_resends_a_repository_queued_longer_than_the_threshold(repo, stuck_after):
    given(
        repo, sync_status="queued", sync_status_changed_at=ago(stuck_after + timedelta(minutes=1))
    )

    assert sweep_repositories().to_enqueue == [repo.pk]


def test_sweep_leaves_a_freshly_queued_repository_alone(repo):
    # Given a message sent five minutes ago, still waiting in the queue
    given(repo, sync_status="queued", sync_status_changed_at=ago(timedelta(minutes=5)))

    assert sweep_repositories().to_enqueue == []
    assert reload(repo).sync_status == "queued"


def test_sweep_resends_a_rate_limited_repository_long_past_its_retry_time(repo, stuck_after):
    sync_outcome.repository_sync_rate_limited(
        tracked_repo_id=repo.pk, retry_at=ago(stuck_after + timedelta(minutes=1))
    )

    assert sweep_repositories().to_enqueue == [repo.pk]


def test_sweep_leaves_a_rate_limited_repository_waiting_for_its_retry_time_alone(repo, stuck_after):
    # Given a limit hit long ago whose reset is still half an hour away
    sync_outcome.repository_sync_rate_limited(
        tracked_repo_id=repo.pk, retry_at=timezone.now() + timedelta(minutes=30)
    )
    given(repo, sync_status_changed_at=ago(2 * stuck_after))

    assert sweep_repositories().to_enqueue == []


def test_sweep_sends_what_a_fanout_that_stopped_halfway_left_requested(repo):
    # Given a fan-out that noted its request ten minutes ago and never sent the message
    given(repo, sync_requested_at=ago(timedelta(minutes=10)))

    assert sweep_repositories().to_enqueue == [repo.pk]


def test_sweep_leaves_a_request_a_running_fanout_is_about_to_send_alone(repo):
    given(repo, sync_requested_at=ago(timedelta(seconds=5)))

    assert sweep_repositories().to_enqueue == []


def test_sweep_sets_an_inactive_repository_left_queued_idle_keeping_its_error(repo):
    # Given a repository deactivated while its message waited (the job will skip it)
    given(repo, is_active=False, sync_status="queued", last_sync_error="502 Bad Gateway")

    result = sweep_repositories()

    assert result.to_enqueue == [] and result.inactive == 1
    repo = reload(repo)
    assert (repo.sync_status, repo.last_sync_error) == ("idle", "502 Bad Gateway")


def test_sweep_sets_a_repository_of_a_disconnected_integration_left_queued_in_error(repo):
    # Given a repository whose team's credential was deleted while its message waited
    given(repo, sync_status="queued")
    IntegrationCredential.objects.filter(integration_id=repo.integration_id).delete()

    result = sweep_repositories()

    assert result.to_enqueue == [] and result.disconnected == 1
    repo = reload(repo)
    assert (repo.sync_status, repo.last_sync_error) == ("error", sync_outcome.DISCONNECTED)


def test_sweep_leaves_an_inactive_repository_whose_sync_still_runs_alone(repo):
    # Given a sync started before the repository was deactivated, still holding its lease
    lease_acquire(tracked_repo=repo)
    sync_outcome.repository_sync_started(tracked_repo=repo)
    given(repo, is_active=False)

    assert sweep_repositories().inactive == 0
    assert reload(repo).sync_status == "syncing"


def test_sweep_actor_sends_the_stuck_repositories_and_marks_them_queued(stub_broker, stuck_after):
    # Given one repository stuck queued, one stuck syncing, and one freshly queued
    stuck_queued, stuck_syncing, fresh = TrackedRepository.objects.filter(
        integration=connected_team("acme", repos=3)
    ).order_by("pk")
    given(stuck_queued, sync_status="queued", sync_status_changed_at=ago(2 * stuck_after))
    given(stuck_syncing, sync_status="syncing", sync_status_changed_at=ago(timedelta(hours=1)))
    given(fresh, sync_status="queued", sync_status_changed_at=ago(timedelta(minutes=1)))
    swept_at = timezone.now()

    # When the sweep runs
    sweep_stuck_repositories()

    # Then the two stuck ones have a new message each and say queued as of now
    sent = [dramatiq.Message.decode(body) for body in stub_broker.queues[QUEUE].queue]
    assert sorted(m.args[0] for m in sent) == [stuck_queued.pk, stuck_syncing.pk]
    for repo in (stuck_queued, stuck_syncing):
        repo = reload(repo)
        assert repo.sync_status == "queued" and repo.sync_status_changed_at >= swept_at
    assert reload(fresh).sync_status_changed_at < swept_at


@pytest.mark.django_db(transaction=True)
def test_repository_stuck_syncing_is_synced_again_after_the_sweep(
    stub_broker, stub_worker, emulator
):
    # Given a repository left "syncing" by a worker that died, its lease long lapsed
    repo = builders.tracked_repo(emulator, "acme/widgets")
    given(repo, sync_status="syncing", sync_status_changed_at=ago(timedelta(hours=1)))

    # When the scheduled sweep runs on a worker
    sweep_stuck_repositories.send()
    stub_broker.join(SWEEP_QUEUE, timeout=30_000, fail_fast=False)
    stub_broker.join(QUEUE, timeout=30_000, fail_fast=False)

    # Then a sync ran to the end and the status is true again
    repo = reload(repo)
    assert repo.sync_status == "idle" and repo.last_sync_at is not None
