"""The repository admin's actions: "Sync now" and "Full resync" send messages at once."""

from __future__ import annotations

from datetime import timedelta

import dramatiq
import pytest
from django.contrib.auth.models import Permission, User
from django.contrib.messages import ERROR, get_messages

from apps.integrations.models import PullRequest, TrackedRepository
from apps.integrations.tasks import INTERACTIVE_QUEUE
from tests import builders

pytestmark = pytest.mark.django_db

REPOS_URL = "/admin/integrations/trackedrepository/"


def queued(broker) -> list[dramatiq.Message]:
    return [dramatiq.Message.decode(data) for data in broker.queues[INTERACTIVE_QUEUE].queue]


def run_action(client, action: str, *repos: TrackedRepository):
    return client.post(REPOS_URL, {"action": action, "_selected_action": [r.pk for r in repos]})


def status_of(repo: TrackedRepository) -> str:
    return TrackedRepository.objects.values_list("sync_status", flat=True).get(pk=repo.pk)


def staff_with(*codenames: str) -> User:
    user = User.objects.create_user("operator", password="unused", is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="integrations", codename__in=codenames)
    )
    return user


def action_choices(response) -> set[str]:
    form = response.context["action_form"]
    if form is None:
        return set()
    return {name for name, _ in form.fields["action"].choices if name}


@pytest.fixture
def repos(emulator) -> list[TrackedRepository]:
    return [builders.tracked_repo(emulator, f"acme/r{i}") for i in range(3)]


def test_sync_now_enqueues_one_interactive_sync_message_per_selected_repository(
    admin_client, stub_broker, repos
):
    selected = repos[:2]

    run_action(admin_client, "sync_now", *selected)

    # Interactive: on their own queue, ahead of the daily fan-out's bulk messages
    messages = queued(stub_broker)
    assert sorted(m.args[0] for m in messages) == sorted(r.pk for r in selected)
    assert {m.actor_name for m in messages} == {"sync_repository_now"}
    assert [m.kwargs for m in messages] == [{"full": False}] * 2


def test_sync_now_runs_at_once_and_redirects_back_to_the_changelist(
    admin_client, stub_broker, repos
):
    response = run_action(admin_client, "sync_now", *repos[:2])

    assert response.status_code == 302
    assert response.url == REPOS_URL


def test_sync_now_marks_selected_repositories_queued_and_leaves_the_others_alone(
    admin_client, stub_broker, repos
):
    run_action(admin_client, "sync_now", *repos[:2])

    assert [status_of(r) for r in repos] == ["queued", "queued", "idle"]


def test_sync_now_reports_how_many_repositories_it_queued(admin_client, stub_broker, repos):
    response = run_action(admin_client, "sync_now", *repos[:2])

    assert [str(m) for m in get_messages(response.wsgi_request)] == [
        "Queued a sync of 2 repositories."
    ]


def test_sync_now_with_redis_down_shows_an_error_and_leaves_the_rows_untouched(
    admin_client, use_redis_broker, repos
):
    # Given a task queue nothing answers at
    use_redis_broker("redis://127.0.0.1:1/0")
    before = list(TrackedRepository.objects.order_by("pk").values())

    # When an operator syncs two repositories
    response = run_action(admin_client, "sync_now", *repos[:2])

    # Then the page comes back with an error saying so, and no row claims a queued message
    assert response.status_code == 302 and response.url == REPOS_URL
    [shown] = list(get_messages(response.wsgi_request))
    assert shown.level == ERROR
    assert str(shown) == "Could not reach the task queue (Redis); nothing was queued."
    assert list(TrackedRepository.objects.order_by("pk").values()) == before


def test_full_resync_enqueues_messages_with_full_true(admin_client, stub_broker, repos):
    run_action(admin_client, "full_resync", *repos[:2])

    messages = queued(stub_broker)
    assert sorted(m.args[0] for m in messages) == sorted(r.pk for r in repos[:2])
    assert [m.kwargs for m in messages] == [{"full": True}] * 2


def test_full_resync_of_one_repository_reports_it_in_the_singular(admin_client, stub_broker, repos):
    response = run_action(admin_client, "full_resync", repos[0])

    assert [str(m) for m in get_messages(response.wsgi_request)] == [
        "Queued a full resync of 1 repository."
    ]


def test_staff_with_change_permission_sees_both_sync_actions(client, repos):
    client.force_login(staff_with("view_trackedrepository", "change_trackedrepository"))

    response = client.get(REPOS_URL)

    assert {"sync_now", "full_resync"} <= action_choices(response)


WITHOUT_CHANGE_PERMISSION = pytest.mark.parametrize(
    "permissions",
    [
        ["view_trackedrepository"],
        # With an action (delete) offered, Django validates the posted one, not ignores it.
        ["view_trackedrepository", "delete_trackedrepository"],
    ],
    ids=["view", "view-and-delete"],
)


@WITHOUT_CHANGE_PERMISSION
def test_staff_without_change_permission_does_not_see_the_sync_actions(client, repos, permissions):
    client.force_login(staff_with(*permissions))

    response = client.get(REPOS_URL)

    assert response.status_code == 200
    assert action_choices(response).isdisjoint({"sync_now", "full_resync"})
    assert b'value="sync_now"' not in response.content


@pytest.mark.parametrize("action", ["sync_now", "full_resync"])
@WITHOUT_CHANGE_PERMISSION
def test_staff_without_change_permission_cannot_run_a_sync_action_by_post(
    client, stub_broker, repos, action, permissions
):
    client.force_login(staff_with(*permissions))
    before = list(TrackedRepository.objects.order_by("pk").values())

    response = run_action(client, action, *repos)

    assert response.status_code in (200, 302)  # the list again, not an error
    assert queued(stub_broker) == []
    assert list(TrackedRepository.objects.order_by("pk").values()) == before


@pytest.mark.django_db(transaction=True)
def test_sync_now_then_workers_sync_the_selected_repositories(
    admin_client, stub_broker, stub_worker, emulator, days_ago
):
    names = ["acme/x", "acme/y"]
    for name in names:
        emulator.generate_pulls(name, 10, start=days_ago(2), step=timedelta(hours=1))
    selected = [builders.tracked_repo(emulator, name) for name in names]
    other = builders.tracked_repo(emulator, "acme/z")

    run_action(admin_client, "sync_now", *selected)
    stub_broker.join(INTERACTIVE_QUEUE, timeout=30_000, fail_fast=False)

    for repo in selected:
        assert PullRequest.objects.filter(tracked_repo=repo).count() == 10
        assert status_of(repo) == "idle"
    assert not PullRequest.objects.filter(tracked_repo=other).exists()
    assert TrackedRepository.objects.get(pk=other.pk).last_sync_at is None


def test_sync_now_skips_inactive_and_disconnected_repositories_and_says_so(
    admin_client, stub_broker, repos, emulator
):
    # Given one inactive repository and one whose team's integration is disconnected
    inactive, syncable, _ = repos
    TrackedRepository.objects.filter(pk=inactive.pk).update(is_active=False)
    disconnected = builders.tracked_repo(emulator, "globex/app", team_slug="globex")
    disconnected.integration.credential.delete()

    response = run_action(admin_client, "sync_now", inactive, syncable, disconnected)

    # Then only the syncable one is queued: a skipped row must not show "queued" for good
    assert [m.args[0] for m in queued(stub_broker)] == [syncable.pk]
    assert status_of(syncable) == "queued"
    assert status_of(inactive) == "idle" and status_of(disconnected) == "idle"
    shown = [str(m) for m in get_messages(response.wsgi_request)]
    assert shown[0] == "Queued a sync of 1 repository."
    assert shown[1].startswith("Skipped 2:")
