"""Registering the repository hook (command and admin action), repairing it, and deleting it
when a repository is untracked: against the emulator over real HTTP."""

from __future__ import annotations

import pytest

from apps.integrations.models import PullRequest, TrackedRepository
from tests import builders

pytestmark = pytest.mark.django_db

REPO = "acme/widgets"
URL = "https://hooks.example.com/webhooks/github/"
SECRET = "s3cret-current-0001"
OLD_SECRET = "s3cret-previous-0002"
REPOS_URL = "/admin/integrations/trackedrepository/"


run = builders.run_command


@pytest.fixture(autouse=True)
def webhook_settings(settings):
    settings.GITHUB_WEBHOOK_SECRETS = [SECRET, OLD_SECRET]
    settings.GITHUB_WEBHOOK_URL = URL
    return settings


@pytest.fixture
def repo(emulator) -> TrackedRepository:
    return builders.tracked_repo(emulator, REPO)


def hook_id_of(repo: TrackedRepository) -> int | None:
    return TrackedRepository.objects.values_list("webhook_id", flat=True).get(pk=repo.pk)


# -- register_webhooks -----------------------------------------------------------------------


def test_register_creates_a_json_hook_for_our_events_with_the_current_secret(emulator, repo):
    code, out, err = run("register_webhooks", REPO, "--url", URL)

    assert (code, err) == (0, "")
    [hook] = emulator.webhooks.hooks(REPO)
    assert (hook.url, hook.content_type, hook.secret) == (URL, "json", SECRET)
    assert sorted(hook.events) == ["pull_request", "repository"] and hook.active
    assert hook_id_of(repo) == hook.id
    assert out.strip() == f"{REPO} (team acme): hook {hook.id} created"


def test_registering_again_keeps_the_one_hook(emulator, repo):
    run("register_webhooks", REPO, "--url", URL)

    code, out, _ = run("register_webhooks", REPO, "--url", URL)

    [hook] = emulator.webhooks.hooks(REPO)
    assert code == 0 and out.strip().endswith(f"hook {hook.id} updated")
    assert hook_id_of(repo) == hook.id


def test_a_hook_deleted_on_github_is_created_again(emulator, repo):
    run("register_webhooks", REPO, "--url", URL)
    emulator.webhooks.delete_hook(REPO, hook_id_of(repo))

    code, out, _ = run("register_webhooks", REPO, "--url", URL)

    [hook] = emulator.webhooks.hooks(REPO)
    assert code == 0 and "created" in out
    assert hook_id_of(repo) == hook.id


def test_a_hook_changed_on_github_is_repaired(emulator, repo):
    run("register_webhooks", REPO, "--url", URL)
    emulator.webhooks.alter_hook(
        REPO, hook_id_of(repo), events=["push"], active=False, content_type="form", secret=""
    )

    code, out, _ = run("register_webhooks", REPO, "--url", URL)

    [hook] = emulator.webhooks.hooks(REPO)
    assert code == 0 and out.strip().endswith("repaired")
    assert (sorted(hook.events), hook.active, hook.content_type, hook.secret) == (
        ["pull_request", "repository"],
        True,
        "json",
        SECRET,
    )


def test_a_new_url_moves_the_hook_registered_before_instead_of_adding_one(emulator, repo):
    run("register_webhooks", REPO, "--url", URL)

    code, out, _ = run("register_webhooks", REPO, "--url", "https://new.example.com/hook/")

    [hook] = emulator.webhooks.hooks(REPO)
    assert code == 0 and out.strip().endswith("repaired")
    assert hook.url == "https://new.example.com/hook/" and hook_id_of(repo) == hook.id


def test_registering_after_a_rotation_gives_the_hook_the_new_secret(
    emulator, repo, webhook_settings
):
    webhook_settings.GITHUB_WEBHOOK_SECRETS = [OLD_SECRET]
    run("register_webhooks", REPO, "--url", URL)
    webhook_settings.GITHUB_WEBHOOK_SECRETS = [SECRET, OLD_SECRET]

    run("register_webhooks", REPO, "--url", URL)

    assert emulator.webhooks.hooks(REPO)[0].secret == SECRET


@pytest.mark.parametrize("kind", ["classic", "fine_grained"])
def test_a_token_without_the_hook_permission_gets_one_line_naming_it_and_exit_1(
    emulator, repo, kind
):
    emulator.webhooks.deny_hook_permission(builders.TOKEN, kind)

    code, out, err = run("register_webhooks", REPO, "--url", URL)

    assert (code, out) == (1, "")
    assert len(err.splitlines()) == 1 and "admin:repo_hook" in err and '"Webhooks"' in err
    repo.refresh_from_db()
    assert repo.is_active and repo.webhook_id is None and "admin:repo_hook" in repo.webhook_error


def test_a_repository_without_the_hook_permission_keeps_syncing_by_polling(emulator, repo):
    emulator.webhooks.deny_hook_permission(builders.TOKEN)
    run("register_webhooks", REPO, "--url", URL)
    emulator.add_pull(REPO, title="Polled")

    code, _, _ = run("sync_repo", REPO)

    assert code == 0
    assert list(PullRequest.objects.values_list("title", flat=True)) == ["Polled"]


def test_all_registers_every_active_repository_says_so_per_line_and_exits_1_if_any_failed(
    emulator,
):
    other_token = builders.new_token()
    emulator.add_token(other_token, login="globex-bot")
    emulator.webhooks.deny_hook_permission(other_token)
    builders.tracked_repo(emulator, REPO)
    builders.tracked_repo(emulator, "globex/api", team_slug="globex", token=other_token)
    inactive = builders.tracked_repo(emulator, "acme/old")
    TrackedRepository.objects.filter(pk=inactive.pk).update(is_active=False)

    code, out, err = run("register_webhooks", "--all", "--url", URL)

    assert code == 1
    assert out.splitlines()[0].startswith(f"{REPO} (team acme): hook ")
    assert out.splitlines()[-1] == "1 registered, 1 failed"
    assert err.startswith("error: globex/api (team globex): cannot manage the hooks")
    assert emulator.webhooks.hooks("acme/old") == []


@pytest.mark.parametrize(
    ("args", "secrets", "says"),
    [
        (["acme/unknown", "--url", URL], [SECRET], "acme/unknown is not tracked"),
        ([REPO, "--url", "ftp://hooks.example.com/"], [SECRET], "invalid webhook URL"),
        ([REPO, "--url", "not a url"], [SECRET], "invalid webhook URL"),
        ([REPO], [SECRET], "no webhook URL"),
        ([REPO, "--url", URL], [], "GITHUB_WEBHOOK_SECRET is not set"),
        ([REPO, "--all", "--url", URL], [SECRET], "not both"),
    ],
)
def test_bad_input_is_one_line_exit_1_and_changes_nothing(
    emulator, repo, webhook_settings, args, secrets, says
):
    webhook_settings.GITHUB_WEBHOOK_SECRETS = secrets
    webhook_settings.GITHUB_WEBHOOK_URL = ""
    emulator.clear_requests()

    code, out, err = run("register_webhooks", *args)

    assert (code, out) == (1, "")
    assert len(err.splitlines()) == 1 and says in err
    assert emulator.requests == [] and hook_id_of(repo) is None


def test_the_secret_appears_in_no_output_and_no_column(emulator, repo):
    emulator.webhooks.deny_hook_permission(builders.TOKEN)
    _, out_failed, err_failed = run("register_webhooks", REPO, "--url", URL)
    emulator.webhooks.allow_hook_permission(builders.TOKEN)
    _, out, err = run("register_webhooks", REPO, "--url", URL)

    row = TrackedRepository.objects.filter(pk=repo.pk).values().get()
    assert SECRET not in out_failed + err_failed + out + err + repr(row)


# -- untrack_repo ----------------------------------------------------------------------------


def test_untrack_repo_stops_syncing_and_deletes_the_hook(emulator, repo):
    run("register_webhooks", REPO, "--url", URL)

    code, out, err = run("untrack_repo", REPO)

    repo.refresh_from_db()
    assert (code, err) == (0, "") and "Stopped tracking acme/widgets" in out
    assert not repo.is_active and repo.inactive_reason == "untracked by an operator"
    assert emulator.webhooks.hooks(REPO) == [] and repo.webhook_id is None


def test_untrack_repo_whose_hook_cannot_be_deleted_untracks_and_warns(emulator, repo):
    run("register_webhooks", REPO, "--url", URL)
    emulator.webhooks.deny_hook_permission(builders.TOKEN)

    code, _, err = run("untrack_repo", REPO)

    repo.refresh_from_db()
    assert code == 0 and not repo.is_active
    assert err.startswith("warning: its webhook could not be deleted")
    assert len(err.splitlines()) == 1


def test_untrack_repo_of_an_unknown_repository_is_one_line_and_exit_1(emulator):
    code, out, err = run("untrack_repo", "acme/unknown")

    assert (code, out, err.strip()) == (1, "", "error: acme/unknown is not tracked")


# -- admin -----------------------------------------------------------------------------------


def test_admin_action_registers_the_hooks_of_the_selected_repositories(
    admin_client, emulator, repo
):
    response = admin_client.post(
        REPOS_URL, {"action": "register_webhooks", "_selected_action": [repo.pk]}, follow=True
    )

    [hook] = emulator.webhooks.hooks(REPO)
    assert hook_id_of(repo) == hook.id
    assert "Registered the webhook of 1 repository." in response.content.decode()


def test_admin_action_without_a_webhook_url_registers_nothing_and_says_why(
    admin_client, emulator, repo, webhook_settings
):
    webhook_settings.GITHUB_WEBHOOK_URL = ""

    response = admin_client.post(
        REPOS_URL, {"action": "register_webhooks", "_selected_action": [repo.pk]}, follow=True
    )

    assert emulator.webhooks.hooks(REPO) == []
    assert "Nothing registered: no webhook URL" in response.content.decode()


def test_admin_list_shows_each_repositorys_webhook_state(admin_client, emulator, repo):
    failing = builders.tracked_repo(emulator, "acme/failing")
    TrackedRepository.objects.filter(pk=failing.pk).update(
        webhook_id=7, webhook_failed_deliveries=2
    )
    run("register_webhooks", REPO, "--url", URL)
    builders.tracked_repo(emulator, "acme/none")

    page = admin_client.get(REPOS_URL).content.decode()

    assert "failing (2 failed)" in page and ">active<" in page and ">none<" in page


def test_deactivating_a_repository_in_the_admin_deletes_its_hook(admin_client, emulator, repo):
    run("register_webhooks", REPO, "--url", URL)

    admin_client.post(f"{REPOS_URL}{repo.pk}/change/", {"_save": "Save"})

    repo.refresh_from_db()
    assert not repo.is_active and repo.webhook_id is None
    assert emulator.webhooks.hooks(REPO) == []


def test_deleting_a_repository_in_the_admin_deletes_its_hook(admin_client, emulator, repo):
    run("register_webhooks", REPO, "--url", URL)

    admin_client.post(
        REPOS_URL, {"action": "delete_selected", "_selected_action": [repo.pk], "post": "yes"}
    )

    assert not TrackedRepository.objects.exists()
    assert emulator.webhooks.hooks(REPO) == []


def test_a_hook_that_cannot_be_deleted_never_blocks_untracking(admin_client, emulator, repo):
    run("register_webhooks", REPO, "--url", URL)
    emulator.webhooks.deny_hook_permission(builders.TOKEN, "fine_grained")

    response = admin_client.post(f"{REPOS_URL}{repo.pk}/change/", {"_save": "Save"}, follow=True)

    repo.refresh_from_db()
    assert not repo.is_active and repo.webhook_error.startswith("could not delete hook")
    assert "could not be deleted on GitHub" in response.content.decode()


def test_a_hook_already_gone_on_github_counts_as_deleted(admin_client, emulator, repo):
    run("register_webhooks", REPO, "--url", URL)
    emulator.webhooks.delete_hook(REPO, hook_id_of(repo))

    admin_client.post(f"{REPOS_URL}{repo.pk}/change/", {"_save": "Save"})

    repo.refresh_from_db()
    assert (repo.webhook_id, repo.webhook_error) == (None, "")


def test_untracking_for_one_team_keeps_the_hook_another_team_uses(admin_client, emulator, repo):
    other = builders.tracked_repo(emulator, REPO, team_slug="globex")
    run("register_webhooks", REPO, "--url", URL)

    admin_client.post(f"{REPOS_URL}{repo.pk}/change/", {"_save": "Save"})

    [hook] = emulator.webhooks.hooks(REPO)
    assert hook_id_of(other) == hook.id and hook_id_of(repo) is None
