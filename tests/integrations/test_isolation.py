"""Two teams tracking the same GitHub repository: each sync uses its own team's token and
writes its own team's rows, whichever way it is started."""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import timedelta

import dramatiq
import pytest
from django.core.management import call_command
from django.db.models import F

from apps.integrations.models import IntegrationCredential, PullRequest, TrackedRepository
from apps.integrations.services.sync_jobs import repository_sync_job
from apps.integrations.tasks import INTERACTIVE_QUEUE, QUEUE, sync_repository
from tests import builders

# The actor runs on worker threads, which see only committed rows.
pytestmark = pytest.mark.django_db(transaction=True)

REPO = "acme/widgets"
REPOS_URL = "/admin/integrations/trackedrepository/"


@dataclass(frozen=True)
class SameRepository:
    """``acme/widgets`` tracked by team ``a`` and by team ``b``, each with its own token."""

    a: TrackedRepository
    b: TrackedRepository
    token_a: str
    token_b: str


@pytest.fixture
def same_repo(emulator, days_ago) -> SameRepository:
    emulator.generate_pulls(REPO, 5, start=days_ago(3), step=timedelta(hours=1))
    token_a, token_b = builders.new_token(), builders.new_token()
    emulator.add_token(token_a, login="a-bot")
    emulator.add_token(token_b, login="b-bot")
    return SameRepository(
        a=builders.tracked_repo(emulator, REPO, team_slug="a", token=token_a),
        b=builders.tracked_repo(emulator, REPO, team_slug="b", token=token_b),
        token_a=token_a,
        token_b=token_b,
    )


def sync(repo: TrackedRepository) -> None:
    repository_sync_job(tracked_repo_id=repo.pk, requested_at=None, time_budget=None)


def snapshot(repo: TrackedRepository) -> tuple[dict, list[dict], bool]:
    """Everything stored for ``repo``: its row, its PR rows, whether its team is connected."""
    return (
        TrackedRepository.objects.values().get(pk=repo.pk),
        list(PullRequest.objects.filter(tracked_repo=repo).order_by("pk").values()),
        IntegrationCredential.objects.filter(integration_id=repo.integration_id).exists(),
    )


@dataclass(frozen=True)
class BSyncedThenRevoked:
    repos: SameRepository
    b_before: tuple[dict, list[dict], bool]
    last_seq: int  # the emulator's last request before team a's sync


@pytest.fixture
def b_synced_then_revoked(same_repo, emulator, days_ago) -> BSyncedThenRevoked:
    """Team b synced once, then lost its token; GitHub has PRs since that b has not seen."""
    sync(same_repo.b)
    emulator.revoke_token(same_repo.token_b)
    emulator.generate_pulls(REPO, 3, start=days_ago(1), step=timedelta(hours=1))
    return BSyncedThenRevoked(
        repos=same_repo,
        b_before=snapshot(same_repo.b),
        last_seq=max(r.seq for r in emulator.requests),
    )


def by_job(request) -> None:
    sync(request.getfixturevalue("same_repo").a)


def by_actor(request) -> None:
    broker = request.getfixturevalue("stub_broker")
    request.getfixturevalue("stub_worker")
    sync_repository.send(request.getfixturevalue("same_repo").a.pk)
    broker.join(QUEUE, timeout=30_000, fail_fast=False)


def by_command(request) -> None:
    # By name: the command must pick team a's row of the two, and sync it with a's token.
    call_command("sync_repo", REPO, "--team", "a", stdout=io.StringIO(), stderr=io.StringIO())


@pytest.fixture(params=[by_job, by_actor, by_command], ids=["job", "actor", "command"])
def sync_team_a(request, b_synced_then_revoked):
    """Syncs team a's repository one of the three ways a sync starts."""
    return lambda: request.param(request)


def test_syncing_team_a_repository_sends_only_team_a_token(
    b_synced_then_revoked, sync_team_a, emulator
):
    scene = b_synced_then_revoked

    sync_team_a()

    sent = [r for r in emulator.requests if r.seq > scene.last_seq]
    assert sent, "the sync asked GitHub nothing"
    assert {r.token for r in sent} == {scene.repos.token_a}


def test_syncing_team_a_repository_writes_pull_requests_only_for_team_a(
    b_synced_then_revoked, sync_team_a, emulator
):
    scene = b_synced_then_revoked
    a = scene.repos.a
    b_rows = [row["id"] for row in scene.b_before[1]]

    sync_team_a()

    a.refresh_from_db()
    assert a.sync_status == "idle" and a.last_sync_error == ""
    builders.assert_matches_github(emulator, a)
    written = PullRequest.objects.exclude(pk__in=b_rows)
    assert set(written.values_list("tracked_repo_id", "team_id")) == {(a.pk, a.team_id)}


def test_syncing_team_a_repository_leaves_team_b_as_it_was(b_synced_then_revoked, sync_team_a):
    scene = b_synced_then_revoked

    sync_team_a()

    assert snapshot(scene.repos.b) == scene.b_before


def test_sync_now_on_team_a_row_enqueues_only_team_a_repository(
    same_repo, admin_client, stub_broker, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(REPOS_URL, {"action": "sync_now", "_selected_action": [same_repo.a.pk]})

    queued = stub_broker.queues[INTERACTIVE_QUEUE].queue
    messages = [dramatiq.Message.decode(data) for data in queued]
    assert [m.args for m in messages] == [(same_repo.a.pk,)]
    statuses = dict(TrackedRepository.objects.values_list("team__slug", "sync_status"))
    assert statuses == {"a": "queued", "b": "idle"}


def test_each_pull_request_row_belongs_to_its_repository_team(same_repo):
    sync(same_repo.a)
    sync(same_repo.b)

    assert not PullRequest.objects.exclude(team_id=F("tracked_repo__team_id")).exists()
    per_team = {slug: PullRequest.objects.filter(team__slug=slug).count() for slug in ("a", "b")}
    assert per_team == {"a": 5, "b": 5}


def test_repository_change_form_cannot_move_a_repository_to_another_team(same_repo, admin_client):
    a, b = same_repo.a, same_repo.b

    admin_client.post(
        f"{REPOS_URL}{a.pk}/change/",
        {"team": b.team_id, "integration": b.integration_id, "is_active": "on", "_save": "Save"},
    )

    assert TrackedRepository.objects.values_list("team_id", "integration_id").get(pk=a.pk) == (
        a.team_id,
        a.integration_id,
    )
