"""``repository`` deliveries: renames and transfers, archiving and deletion."""

from __future__ import annotations

import pytest

from apps.integrations.models import TrackedRepository
from apps.integrations.services.webhook_events import REASON_ARCHIVED, REASON_DELETED
from devtools.webhook_payloads import repository_payload, signed
from tests import builders
from tests.webhooks.conftest import SECRET

pytestmark = pytest.mark.django_db

REPO = "acme/widgets"


@pytest.fixture
def repo(emulator) -> TrackedRepository:
    return builders.tracked_repo(emulator, REPO)


def repository_delivery(emulator, action: str, *, full_name: str = REPO, changes=None):
    payload = repository_payload(emulator, REPO, action=action, changes=changes)
    owner, name = full_name.split("/")
    payload["repository"] |= {"full_name": full_name, "name": name}
    payload["repository"]["owner"]["login"] = owner
    return signed(payload, event="repository", secret=SECRET)


def reload(repo: TrackedRepository) -> TrackedRepository:
    repo.refresh_from_db()
    return repo


def test_renamed_repository_takes_its_new_name(deliver, emulator, repo):
    delivery = repository_delivery(
        emulator, "renamed", full_name="acme/gadgets",
        changes={"repository": {"name": {"from": "widgets"}}},
    )  # fmt: skip

    response = deliver(delivery)

    assert response.status_code == 200
    assert reload(repo).full_name == "acme/gadgets"


def test_rename_reaches_every_team_tracking_the_repository(deliver, emulator, repo):
    other = builders.tracked_repo(emulator, REPO, team_slug="globex", token=builders.new_token())

    deliver(repository_delivery(
        emulator, "renamed", full_name="acme/gadgets",
        changes={"repository": {"name": {"from": "widgets"}}},
    ))  # fmt: skip

    assert reload(repo).full_name == reload(other).full_name == "acme/gadgets"


def test_transferred_repository_takes_its_new_owner(deliver, emulator, repo):
    delivery = repository_delivery(
        emulator, "transferred", full_name="globex/widgets",
        changes={"owner": {"from": {"organization": {"login": "acme"}}}},
    )  # fmt: skip

    deliver(delivery)

    assert reload(repo).full_name == "globex/widgets"


def test_rename_onto_a_name_the_team_tracks_already_keeps_the_old_name(deliver, emulator, repo):
    taken = builders.tracked_repo(emulator, "acme/gadgets")

    response = deliver(repository_delivery(
        emulator, "renamed", full_name="acme/gadgets",
        changes={"repository": {"name": {"from": "widgets"}}},
    ))  # fmt: skip

    assert response.status_code == 200
    assert (reload(repo).full_name, reload(taken).full_name) == (REPO, "acme/gadgets")


def test_archived_repository_becomes_inactive_with_the_reason(deliver, emulator, repo):
    deliver(repository_delivery(emulator, "archived"))

    repo = reload(repo)
    assert (repo.is_active, repo.inactive_reason) == (False, REASON_ARCHIVED)


def test_deleted_repository_becomes_inactive_with_the_reason(deliver, emulator, repo):
    deliver(repository_delivery(emulator, "deleted"))

    repo = reload(repo)
    assert (repo.is_active, repo.inactive_reason) == (False, REASON_DELETED)


def test_unarchived_repository_is_active_again(deliver, emulator, repo):
    deliver(repository_delivery(emulator, "archived"))

    deliver(repository_delivery(emulator, "unarchived"))

    repo = reload(repo)
    assert (repo.is_active, repo.inactive_reason) == (True, "")


def test_unarchiving_leaves_a_repository_an_admin_deactivated_inactive(deliver, emulator, repo):
    TrackedRepository.objects.filter(pk=repo.pk).update(is_active=False)
    deliver(repository_delivery(emulator, "archived"))

    deliver(repository_delivery(emulator, "unarchived"))

    repo = reload(repo)
    assert (repo.is_active, repo.inactive_reason) == (False, "")


def test_repository_event_for_a_repository_nobody_tracks_is_202(deliver, emulator):
    emulator.add_repo(REPO)

    response = deliver(repository_delivery(emulator, "deleted"))

    assert response.status_code == 202
    assert not TrackedRepository.objects.exists()


def test_admin_shows_why_a_repository_is_inactive(deliver, emulator, repo, admin_client):
    deliver(repository_delivery(emulator, "archived"))

    page = admin_client.get("/admin/integrations/trackedrepository/").content.decode()

    assert REASON_ARCHIVED in page


def test_reactivating_by_hand_in_the_admin_clears_the_reason(deliver, emulator, repo, admin_client):
    deliver(repository_delivery(emulator, "archived"))

    admin_client.post(
        f"/admin/integrations/trackedrepository/{repo.pk}/change/", {"is_active": "on"}
    )

    repo = reload(repo)
    assert (repo.is_active, repo.inactive_reason) == (True, "")
