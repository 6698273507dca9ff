"""track_repo and sync_repo: what an operator sees, and what they leave in the database."""

from __future__ import annotations

from datetime import timedelta

import pytest

from apps.integrations.models import (
    GitHubIntegration,
    IntegrationCredential,
    PullRequest,
    TrackedRepository,
)
from apps.integrations.services import sync_outcome
from apps.teams.models import Team
from tests import builders

pytestmark = pytest.mark.django_db

REPO = "acme/widgets"


run = builders.run_command


def nothing_created() -> bool:
    return not (
        Team.objects.exists()
        or GitHubIntegration.objects.exists()
        or IntegrationCredential.objects.exists()
        or TrackedRepository.objects.exists()
    )


@pytest.fixture
def token_env(monkeypatch):
    monkeypatch.setenv("GITHUB_TOKEN", builders.TOKEN)


# -- track_repo ------------------------------------------------------------------------------


def test_track_repo_creates_team_integration_credential_and_repository(emulator, token_env):
    github_repo = emulator.add_repo(REPO)

    code, out, err = run("track_repo", REPO, "--team", "acme")

    assert (code, err) == (0, "")
    assert "Now tracking acme/widgets" in out
    repo = TrackedRepository.objects.get()
    assert (repo.team.slug, repo.team.name) == ("acme", "acme")
    assert repo.github_repo_id == github_repo.id and repo.full_name == REPO
    assert repo.integration.account_login == "octocat" and repo.integration.is_connected
    assert repo.integration.credential.access_token.reveal() == builders.TOKEN


def test_track_repo_stores_githubs_spelling_of_the_name(emulator, token_env):
    emulator.add_repo("Acme/Widgets")

    run("track_repo", "acme/WIDGETS", "--team", "acme")

    assert TrackedRepository.objects.get().full_name == "Acme/Widgets"


def test_track_repo_twice_says_already_tracked_and_exits_zero(emulator, token_env):
    emulator.add_repo(REPO)
    run("track_repo", REPO, "--team", "acme")

    code, out, _ = run("track_repo", REPO, "--team", "acme")

    assert code == 0 and "already tracked" in out
    assert TrackedRepository.objects.count() == 1


def test_track_repo_reads_the_token_from_the_named_variable(emulator, monkeypatch):
    emulator.add_repo(REPO)
    emulator.add_token("ghp_othertoken000000000000000000000000002", login="hubot")
    monkeypatch.setenv("ACME_TOKEN", "ghp_othertoken000000000000000000000000002")

    code, _, _ = run("track_repo", REPO, "--team", "acme", "--token-env", "ACME_TOKEN")

    assert code == 0
    assert GitHubIntegration.objects.get().account_login == "hubot"


@pytest.mark.parametrize(
    "name", ["widgets", "acme/", "/widgets", "a/b/c", "acme/wid gets", "ac--me/x", "acme/.."]
)
def test_track_repo_rejects_a_malformed_name_and_creates_nothing(emulator, token_env, name):
    code, out, err = run("track_repo", name, "--team", "acme")

    assert code == 1 and out == ""
    assert err.startswith("error: invalid repository name") and err.count("\n") == 1
    assert nothing_created() and emulator.requests == []


def test_track_repo_with_an_unknown_repository_creates_nothing(emulator, token_env):
    code, _, err = run("track_repo", "acme/missing", "--team", "acme")

    assert code == 1 and "not found" in err and err.count("\n") == 1
    assert nothing_created()


def test_track_repo_with_a_rejected_token_creates_nothing(emulator, monkeypatch):
    emulator.add_repo(REPO)
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_revoked0000000000000000000000000000")

    code, _, err = run("track_repo", REPO, "--team", "acme")

    assert code == 1 and "rejected the token" in err
    assert "ghp_revoked" not in err
    assert nothing_created()


def test_track_repo_without_a_token_says_which_variable_is_missing(emulator, monkeypatch):
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)

    code, _, err = run("track_repo", REPO, "--team", "acme")

    assert code == 1 and "GITHUB_TOKEN" in err
    assert nothing_created()


def test_track_repo_with_a_new_token_reconnects_and_clears_the_credential_error(
    emulator, token_env
):
    emulator.add_repo(REPO)
    emulator.add_repo("acme/gadgets")
    run("track_repo", REPO, "--team", "acme")
    run("track_repo", "acme/gadgets", "--team", "acme")
    integration = GitHubIntegration.objects.get()
    sync_outcome.integration_credentials_rejected(integration=integration)
    assert not GitHubIntegration.objects.get().is_connected

    code, out, _ = run("track_repo", REPO, "--team", "acme")

    integration = GitHubIntegration.objects.get()
    assert code == 0 and "Reconnected" in out and integration.is_connected
    assert set(TrackedRepository.objects.values_list("sync_status", "last_sync_error")) == {
        ("idle", "")
    }


# -- sync_repo -------------------------------------------------------------------------------


def test_sync_repo_prints_progress_and_a_one_line_summary(emulator, days_ago):
    emulator.generate_pulls(REPO, 150, start=days_ago(10), step=timedelta(minutes=5))
    builders.tracked_repo(emulator, REPO)

    code, out, err = run("sync_repo", REPO)

    assert code == 0
    assert out.count("\n") == 1 and "150 PRs upserted" in out and "requests" in out
    assert "page 1" in err
    repo = TrackedRepository.objects.get()
    assert (repo.sync_status, repo.last_sync_error) == ("idle", "")
    assert repo.last_sync_at is not None
    assert PullRequest.objects.count() == 150


def test_sync_repo_matches_the_name_case_insensitively(emulator, days_ago):
    emulator.add_pull(REPO, updated_at=days_ago(1))
    builders.tracked_repo(emulator, REPO)

    code, _, _ = run("sync_repo", "ACME/Widgets")

    assert code == 0 and PullRequest.objects.count() == 1


def test_sync_repo_of_an_untracked_repository_hints_at_track_repo(emulator):
    code, out, err = run("sync_repo", REPO)

    assert code == 1 and out == ""
    assert "not tracked" in err and "track_repo" in err and err.count("\n") == 1


def test_sync_repo_needs_team_only_when_two_teams_track_the_name(emulator, days_ago):
    emulator.add_pull(REPO, updated_at=days_ago(1))
    builders.tracked_repo(emulator, REPO, team_slug="acme")
    builders.tracked_repo(emulator, REPO, team_slug="globex")

    ambiguous = run("sync_repo", REPO)
    chosen = run("sync_repo", REPO, "--team", "globex")

    assert ambiguous[0] == 1 and "acme, globex" in ambiguous[2] and "--team" in ambiguous[2]
    assert chosen[0] == 0
    assert PullRequest.objects.for_team(Team.objects.get(slug="globex")).count() == 1
    assert PullRequest.objects.for_team(Team.objects.get(slug="acme")).count() == 0


def test_sync_repo_full_with_days_back_lists_that_window(emulator, days_ago):
    emulator.add_pull(REPO, updated_at=days_ago(40))
    emulator.add_pull(REPO, updated_at=days_ago(2))
    builders.tracked_repo(emulator, REPO)
    run("sync_repo", REPO, "--days-back", "7")
    assert PullRequest.objects.count() == 1

    code, out, _ = run("sync_repo", REPO, "--full")

    assert code == 0 and "full sync" in out and PullRequest.objects.count() == 2


def test_sync_repo_rejects_a_non_positive_days_back(emulator):
    builders.tracked_repo(emulator, REPO)

    code, _, err = run("sync_repo", REPO, "--days-back", "0")

    assert code == 1 and "--days-back" in err


def test_sync_repo_rate_limited_exits_75_with_the_reset_time(emulator, days_ago):
    emulator.generate_pulls(REPO, 150, start=days_ago(10), step=timedelta(minutes=5))
    builders.tracked_repo(emulator, REPO)
    reset_at = (emulator.now() + timedelta(minutes=30)).replace(microsecond=0)
    emulator.set_rate_limit(builders.TOKEN, remaining=2, reset_at=reset_at)  # 2 listings

    code, out, err = run("sync_repo", REPO)

    iso = reset_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert code == 75 and out == ""
    last_line = err.splitlines()[-1]
    assert last_line.startswith("error:") and "rate limit" in last_line and iso in last_line
    repo = TrackedRepository.objects.get()
    assert repo.sync_status == "rate_limited"
    assert repo.last_sync_error == f"rate limited until {iso}"
    assert PullRequest.objects.count() >= 100


def test_sync_repo_after_the_reset_finishes_the_interrupted_sync(emulator, days_ago):
    emulator.generate_pulls(REPO, 150, start=days_ago(10), step=timedelta(minutes=5))
    builders.tracked_repo(emulator, REPO)
    emulator.set_rate_limit(builders.TOKEN, remaining=2)
    run("sync_repo", REPO)
    emulator.set_rate_limit(builders.TOKEN, remaining=5000)

    code, out, _ = run("sync_repo", REPO)

    assert code == 0 and "full sync done" in out
    assert PullRequest.objects.count() == 150
    assert TrackedRepository.objects.get().sync_status == "idle"


def test_sync_repo_with_a_revoked_token_disconnects_the_integration(emulator, days_ago):
    emulator.add_pull(REPO, updated_at=days_ago(1))
    emulator.add_repo("acme/gadgets")
    repo = builders.tracked_repo(emulator, REPO)
    other = builders.tracked_repo(emulator, "acme/gadgets")
    run("sync_repo", REPO)
    emulator.revoke_token(builders.TOKEN)

    code, _, err = run("sync_repo", REPO)

    assert code == 1 and "rejected the credentials" in err and err.count("\n") == 1
    integration = GitHubIntegration.objects.get()
    assert not integration.is_connected
    for tracked in (repo, other):
        tracked.refresh_from_db()
        assert tracked.sync_status == "error"
        assert "credentials were rejected" in tracked.last_sync_error.replace(
            "rejected the credentials", "credentials were rejected"
        )
    assert PullRequest.objects.count() == 1


def test_sync_repo_of_a_disconnected_integration_fails_without_asking_github(emulator):
    repo = builders.tracked_repo(emulator, REPO)
    IntegrationCredential.objects.filter(integration=repo.integration).delete()
    emulator.clear_requests()

    code, _, err = run("sync_repo", REPO)

    assert code == 1 and "disconnected" in err and "track_repo" in err
    assert emulator.requests == []


def test_sync_repo_of_a_repository_gone_from_github_exits_1(emulator):
    builders.tracked_repo(emulator, REPO)
    TrackedRepository.objects.update(full_name="acme/deleted")

    code, _, err = run("sync_repo", "acme/deleted")

    assert code == 1 and "404" in err and err.count("\n") == 1
    assert TrackedRepository.objects.get().sync_status == "error"
