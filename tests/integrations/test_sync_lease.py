"""One sync per repository: the lease on the repository row (services.sync_lease)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.integrations.models import TrackedRepository
from apps.integrations.services.sync_lease import LeaseLost, lease_acquire, lease_holder
from tests import builders

pytestmark = pytest.mark.django_db


@pytest.fixture
def repo(emulator) -> TrackedRepository:
    return builders.tracked_repo(emulator, "acme/widgets")


def lease_row(repo: TrackedRepository) -> tuple:
    return TrackedRepository.objects.values_list("sync_lease_owner", "sync_lease_expires_at").get(
        pk=repo.pk
    )


def test_a_free_lease_is_taken(repo):
    lease = lease_acquire(tracked_repo=repo)

    assert lease is not None
    assert lease_holder(tracked_repo=repo).owner == lease.owner


def test_a_live_lease_is_not_taken_twice(repo):
    first = lease_acquire(tracked_repo=repo)

    assert lease_acquire(tracked_repo=repo) is None
    assert lease_holder(tracked_repo=repo).owner == first.owner


def test_a_lapsed_lease_is_taken_over(repo):
    first = lease_acquire(tracked_repo=repo)
    TrackedRepository.objects.filter(pk=repo.pk).update(
        sync_lease_expires_at=timezone.now() - timedelta(seconds=1)
    )

    second = lease_acquire(tracked_repo=repo)

    assert second is not None and second.owner != first.owner
    assert lease_holder(tracked_repo=repo).owner == second.owner


def test_a_lease_held_by_a_dead_process_of_this_machine_is_taken_at_once(repo):
    first = lease_acquire(tracked_repo=repo)
    host, _, rest = first.owner.partition(":")
    # No process has PID 2**22 + 1 (above Linux's pid_max limit).
    dead = f"{host}:{2**22 + 1}:{rest.partition(':')[2]}"
    TrackedRepository.objects.filter(pk=repo.pk).update(sync_lease_owner=dead)

    second = lease_acquire(tracked_repo=repo)

    assert second is not None and lease_holder(tracked_repo=repo).owner == second.owner


def test_renewing_extends_the_lease(repo, settings):
    settings.SYNC_LEASE_SECONDS = 60
    lease = lease_acquire(tracked_repo=repo)
    before = lease_row(repo)[1]

    lease.renew(force=True)

    assert lease_row(repo)[1] > before


def test_renewing_a_lease_another_sync_took_raises_lease_lost(repo):
    lease = lease_acquire(tracked_repo=repo)
    TrackedRepository.objects.filter(pk=repo.pk).update(sync_lease_owner="another-host:1:abc")

    with pytest.raises(LeaseLost):
        lease.renew(force=True)


def test_releasing_frees_only_our_own_lease(repo):
    lease = lease_acquire(tracked_repo=repo)
    TrackedRepository.objects.filter(pk=repo.pk).update(sync_lease_owner="another-host:1:abc")

    lease.release()

    assert lease_row(repo)[0] == "another-host:1:abc"
