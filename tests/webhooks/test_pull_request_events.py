"""``pull_request`` deliveries: upserted through the sync's write path, for every team."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connections, transaction
from django.test import Client

from apps.integrations.models import (
    IntegrationCredential,
    PullRequest,
    TrackedRepository,
    WebhookDelivery,
)
from apps.integrations.services.pull_requests import PullRequestData
from apps.integrations.services.webhook_events import Delivery, webhook_delivery_apply
from devtools.webhook_payloads import PULL_REQUEST_ACTIONS, pull_request_payload, signed
from tests import builders
from tests.webhooks.conftest import SECRET, URL

pytestmark = pytest.mark.django_db

REPO = "acme/widgets"


@pytest.fixture
def repo(emulator, days_ago) -> TrackedRepository:
    emulator.add_pull(
        REPO,
        title="Add webhooks",
        author="alice",
        created_at=days_ago(3),
        updated_at=days_ago(2),
        additions=120,
        deletions=7,
        changed_files=4,
        commits=3,
        head_ref="feature/webhooks",
    )
    return builders.tracked_repo(emulator, REPO)


def pr_delivery(emulator, action: str = "opened", number: int = 1, **kwargs):
    return signed(
        pull_request_payload(emulator, REPO, number, action=action), event="pull_request",
        secret=SECRET, **kwargs,
    )  # fmt: skip


def stored(repo: TrackedRepository, number: int = 1) -> PullRequest:
    return PullRequest.objects.get(tracked_repo=repo, number=number)


def test_opened_pull_request_is_stored_as_the_rest_api_describes_it(deliver, emulator, repo):
    response = deliver(pr_delivery(emulator))

    assert response.status_code == 200
    assert response.json() == {"outcome": "applied"}
    rest = PullRequestData.from_rest(emulator_pull(emulator, 1))
    row = stored(repo)
    assert {f: getattr(row, f) for f in PullRequestData.__dataclass_fields__} == {
        f: getattr(rest, f) for f in PullRequestData.__dataclass_fields__
    }
    assert (row.additions, row.changed_files, row.head_ref) == (120, 4, "feature/webhooks")


def emulator_pull(emulator, number: int) -> dict:
    """The PR as ``GET /repos/o/r/pulls/N`` answers it."""
    import requests

    answer = requests.get(
        f"{emulator.api_url}/repos/{REPO}/pulls/{number}",
        headers={"Authorization": f"token {builders.TOKEN}"},
        timeout=10,
    )
    answer.raise_for_status()
    return answer.json()


@pytest.mark.parametrize("action", PULL_REQUEST_ACTIONS)
def test_every_pull_request_action_upserts_the_pr(deliver, emulator, repo, action):
    deliver(pr_delivery(emulator, "opened"))
    emulator.update(REPO, 1, title=f"after {action}", **_fields_for(action))

    response = deliver(pr_delivery(emulator, action))

    assert response.status_code == 200
    row = stored(repo)
    truth = emulator.get(REPO, 1)
    assert (row.title, row.state, row.is_draft, row.merged_at, row.github_updated_at) == (
        truth.title, truth.state, truth.draft, truth.merged_at, truth.updated_at,
    )  # fmt: skip


def _fields_for(action: str) -> dict:
    return {
        "closed": {"state": "merged"},
        "reopened": {"state": "open"},
        "converted_to_draft": {"draft": True},
        "ready_for_review": {"draft": False},
        "synchronize": {"commits": 4, "additions": 150},
        "locked": {"locked": True},
    }.get(action, {})


def test_replayed_guid_changes_nothing_and_answers_200(deliver, emulator, repo):
    first = pr_delivery(emulator)
    deliver(first)
    # A sync stores its own copy of the same version meanwhile (equal updated_at would
    # normally be written again).
    PullRequest.objects.filter(tracked_repo=repo).update(title="written by the sync")

    response = deliver(first)

    assert response.status_code == 200
    assert response.json() == {"outcome": "duplicate"}
    assert stored(repo).title == "written by the sync"
    assert WebhookDelivery.objects.filter(guid=first.guid).count() == 1


def test_older_delivery_arriving_after_a_newer_one_changes_nothing(deliver, emulator, repo):
    older = pr_delivery(emulator, "opened")
    emulator.update(REPO, 1, title="Add webhooks, reviewed", updated_at=emulator.now())
    newer = pr_delivery(emulator, "edited")

    deliver(newer)
    response = deliver(older)

    assert response.status_code == 200
    assert response.json() == {"outcome": "stale"}
    assert stored(repo).title == "Add webhooks, reviewed"


def test_every_team_tracking_the_repository_gets_the_update(deliver, emulator, repo):
    other = builders.tracked_repo(emulator, REPO, team_slug="globex", token=builders.new_token())

    deliver(pr_delivery(emulator))

    assert stored(repo).title == stored(other).title == "Add webhooks"
    assert stored(other).team_id == other.team_id != repo.team_id


def test_delivery_for_a_repository_nobody_tracks_is_202_and_creates_nothing(deliver, emulator):
    emulator.add_pull("someone/else", title="Not ours")
    delivery = signed(
        pull_request_payload(emulator, "someone/else", 1), event="pull_request", secret=SECRET
    )

    response = deliver(delivery)

    assert response.status_code == 202
    assert not PullRequest.objects.exists()
    assert not WebhookDelivery.objects.exists()
    assert not TrackedRepository.objects.exists()


def test_inactive_repository_is_not_written(deliver, emulator, repo):
    TrackedRepository.objects.filter(pk=repo.pk).update(is_active=False)

    response = deliver(pr_delivery(emulator))

    assert response.status_code == 202
    assert not PullRequest.objects.exists()


def test_repository_of_a_disconnected_team_is_not_written(deliver, emulator, repo):
    IntegrationCredential.objects.filter(integration=repo.integration).delete()

    response = deliver(pr_delivery(emulator))

    assert response.status_code == 202
    assert not PullRequest.objects.exists()


def test_delivery_notes_when_the_repository_last_got_one(deliver, emulator, repo):
    deliver(pr_delivery(emulator))

    repo.refresh_from_db()
    assert repo.webhook_last_delivery_at is not None


def test_delivery_never_moves_the_sync_watermark_checkpoint_or_status(deliver, emulator, repo, now):
    watermark = now - timedelta(days=5)
    TrackedRepository.objects.filter(pk=repo.pk).update(sync_watermark=watermark)

    deliver(pr_delivery(emulator))

    repo.refresh_from_db()
    assert (repo.sync_watermark, repo.sync_checkpoint, repo.sync_status) == (
        watermark, None, TrackedRepository.SyncStatus.IDLE,
    )  # fmt: skip


def test_delivery_is_recorded_with_its_event_action_and_repository(deliver, emulator, repo):
    delivery = pr_delivery(emulator, "labeled")

    deliver(delivery)

    record = WebhookDelivery.objects.get(guid=delivery.guid)
    assert (record.event, record.action, record.github_repo_id, record.outcome) == (
        "pull_request", "labeled", repo.github_repo_id, "applied",
    )  # fmt: skip


@pytest.mark.django_db(transaction=True)
def test_same_guid_in_flight_twice_is_applied_once(emulator, repo, secrets):
    delivery = pr_delivery(emulator)
    payload = pull_request_payload(emulator, REPO, 1)
    answers = []

    def second_worker() -> None:
        try:
            answers.append(
                Client().generic(
                    "POST", URL, delivery.body, content_type="application/json",
                    headers={k: v for k, v in delivery.headers.items() if k != "Content-Type"},
                )
            )  # fmt: skip
        finally:
            connections.close_all()

    # Given the first worker inside its transaction, the delivery applied, not committed
    with transaction.atomic():
        webhook_delivery_apply(delivery=Delivery(delivery.guid, "pull_request", payload))
        # When a second worker gets the same GUID meanwhile (it waits for the first's locks)
        thread = threading.Thread(target=second_worker)
        thread.start()
    thread.join(timeout=60)

    # Then it answers 200 without applying it again, and one record exists
    [answer] = answers
    assert (answer.status_code, answer.json()) == (200, {"outcome": "duplicate"})
    assert WebhookDelivery.objects.filter(guid=delivery.guid).count() == 1
    assert PullRequest.objects.filter(tracked_repo=repo).count() == 1


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_delivery_during_a_sync_page_write_waits_instead_of_deadlocking(emulator, repo, secrets):
    from apps.integrations.services.pull_requests import pull_requests_upsert
    from tests.processes import wait_until

    delivery = pr_delivery(emulator)
    pull = PullRequestData.from_rest(pull_request_payload(emulator, REPO, 1)["pull_request"])
    answers = []

    def webhook() -> None:
        try:
            answers.append(
                Client().generic(
                    "POST", URL, delivery.body, content_type="application/json",
                    headers={k: v for k, v in delivery.headers.items() if k != "Content-Type"},
                )
            )  # fmt: skip
        finally:
            connections.close_all()

    def waiting_on_a_lock() -> bool:
        with connections["default"].cursor() as cursor:
            # Statistics are a snapshot per transaction unless cleared.
            cursor.execute("SELECT pg_stat_clear_snapshot()")
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND pid <> pg_backend_pid()"
            )
            return cursor.fetchone()[0] > 0

    # Given a sync's page write that has confirmed its lease (a repository row update)
    with transaction.atomic():
        TrackedRepository.objects.filter(pk=repo.pk).update(sync_lease_owner="sync")
        # When a delivery of one of the page's PRs arrives and has to wait
        thread = threading.Thread(target=webhook)
        thread.start()
        wait_until(waiting_on_a_lock, timeout=60, what="the delivery to wait on a lock")
        # the page's upsert still goes through (a deadlock would fail one of the two)
        pull_requests_upsert(tracked_repo=repo, pull_requests=[pull])
    thread.join(timeout=60)

    # Then both commit: the delivery after the page
    [answer] = answers
    assert answer.status_code == 200, answer.content
    assert WebhookDelivery.objects.filter(guid=delivery.guid).exists()
