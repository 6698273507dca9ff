"""The Django admin as an operator uses it: repositories, credentials, pull requests."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

import pytest

from apps.integrations.models import (
    GitHubIntegration,
    IntegrationCredential,
    PullRequest,
    TrackedRepository,
)
from apps.integrations.services import sync_outcome
from apps.teams.models import Team

pytestmark = pytest.mark.django_db

REPOS_URL = "/admin/integrations/trackedrepository/"
CREDENTIALS_URL = "/admin/integrations/integrationcredential/"
INTEGRATIONS_URL = "/admin/integrations/githubintegration/"
PULLS_URL = "/admin/integrations/pullrequest/"
WHEN = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def new_token() -> str:
    return "ghp_" + secrets.token_hex(18)


def integration_for(slug: str, *, token: str | None = None) -> GitHubIntegration:
    team = Team.objects.create(slug=slug, name=slug.title())
    integration = GitHubIntegration.objects.create(team=team, account_login=f"{slug}-bot")
    IntegrationCredential.objects.create(integration=integration, access_token=token or new_token())
    return integration


def repo(integration: GitHubIntegration, name: str) -> TrackedRepository:
    return TrackedRepository.objects.create(
        team=integration.team,
        integration=integration,
        github_repo_id=TrackedRepository.objects.count() + 1,
        full_name=name,
    )


def pull(tracked: TrackedRepository, number: int, title: str) -> PullRequest:
    return PullRequest.objects.create(
        team=tracked.team,
        tracked_repo=tracked,
        github_id=10_000 + number,
        number=number,
        title=title,
        state=PullRequest.State.OPEN,
        author_login="octocat",
        github_created_at=WHEN,
        github_updated_at=WHEN,
        html_url=f"https://github.com/{tracked.full_name}/pull/{number}",
    )


def page(response) -> str:
    return response.content.decode()


# -- tracked repositories --------------------------------------------------------------------


def test_repository_changelist_shows_name_team_status_and_short_error(admin_client):
    # Given a repository whose last sync failed with a long message
    tracked = repo(integration_for("acme"), "acme/widgets")
    long_error = "upstream said " + "abcdefghij" * 20
    sync_outcome.repository_sync_failed(tracked_repo=tracked, message=long_error)

    # When the operator opens the repository list
    response = admin_client.get(REPOS_URL)

    # Then the row shows its name, team, status and the start of the error, cut short
    assert response.status_code == 200
    html = page(response)
    assert '<th class="field-full_name">' in html and ">acme/widgets</a></th>" in html
    assert '<td class="field-team nowrap">acme</td>' in html
    assert '<td class="field-sync_status">Error</td>' in html
    assert f'<td class="field-short_error">{long_error[:79]}…</td>' in html
    assert long_error not in html


def test_repository_changelist_search_finds_by_name(admin_client):
    # Given two repositories
    integration = integration_for("acme")
    repo(integration, "acme/widgets")
    repo(integration, "acme/gadgets")

    # When the operator searches for one
    response = admin_client.get(REPOS_URL, {"q": "widg"})

    # Then only it is listed
    assert response.status_code == 200
    assert "acme/widgets" in page(response)
    assert "acme/gadgets" not in page(response)


def test_repository_changelist_filters_by_sync_status(admin_client):
    # Given one repository in error and one idle
    integration = integration_for("acme")
    broken = repo(integration, "acme/broken")
    repo(integration, "acme/healthy")
    sync_outcome.repository_sync_failed(tracked_repo=broken, message="502 Bad Gateway")

    # When the operator filters on the error status
    response = admin_client.get(REPOS_URL, {"sync_status__exact": "error"})

    # Then only the repository in error is listed
    assert response.status_code == 200
    assert "acme/broken" in page(response)
    assert "acme/healthy" not in page(response)


# -- credentials -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        lambda i: CREDENTIALS_URL,
        lambda i: f"{CREDENTIALS_URL}{i.credential.pk}/change/",
        lambda i: f"{CREDENTIALS_URL}{i.credential.pk}/delete/",
        lambda i: INTEGRATIONS_URL,
        lambda i: f"{INTEGRATIONS_URL}{i.pk}/change/",
    ],
    ids=[
        "credential-list",
        "credential-page",
        "credential-delete",
        "integration-list",
        "integration-page",
    ],
)
def test_admin_pages_never_contain_the_token(admin_client, url):
    # Given a connected integration
    token = new_token()
    integration = integration_for("acme", token=token)

    # When the operator opens an admin page about it
    response = admin_client.get(url(integration))

    # Then the page loads and nowhere in its source is the token
    assert response.status_code == 200
    assert token.encode() not in response.content
    assert token[4:].encode() not in response.content


def test_credential_page_is_read_only(admin_client):
    # Given a stored credential
    token = new_token()
    credential = integration_for("acme", token=token).credential

    # When the operator opens it
    response = admin_client.get(f"{CREDENTIALS_URL}{credential.pk}/change/")

    # Then Django shows it for viewing only: no form fields, no save button, no token
    assert response.status_code == 200
    html = page(response)
    assert 'name="_save"' not in html
    assert 'name="access_token"' not in html
    assert token not in html


def test_credential_cannot_be_changed_by_posting_to_the_admin(admin_client):
    # Given a stored credential
    token = new_token()
    credential = integration_for("acme", token=token).credential

    # When someone posts a new token to its admin page
    response = admin_client.post(
        f"{CREDENTIALS_URL}{credential.pk}/change/",
        {"access_token": "ghp_" + "0" * 36, "_save": "Save"},
    )

    # Then the change is refused and the stored token is the same
    assert response.status_code == 403
    credential.refresh_from_db()
    assert credential.access_token.reveal() == token


def test_credential_cannot_be_added_in_the_admin(admin_client):
    response = admin_client.get(f"{CREDENTIALS_URL}add/")

    assert response.status_code == 403


# -- pull requests ---------------------------------------------------------------------------


def test_pull_request_cannot_be_added_in_the_admin(admin_client):
    response = admin_client.get(f"{PULLS_URL}add/")

    assert response.status_code == 403


def test_pull_request_cannot_be_changed_in_the_admin(admin_client):
    # Given a synced pull request
    pr = pull(repo(integration_for("acme"), "acme/widgets"), 7, "Add retries")

    # When someone posts a new title to its admin page
    response = admin_client.post(f"{PULLS_URL}{pr.pk}/change/", {"title": "Hacked", "_save": "1"})

    # Then the change is refused and the title is GitHub's
    assert response.status_code == 403
    pr.refresh_from_db()
    assert pr.title == "Add retries"


def test_pull_request_page_is_view_only(admin_client):
    # Given a synced pull request
    pr = pull(repo(integration_for("acme"), "acme/widgets"), 7, "Add retries")

    # When the operator opens it
    response = admin_client.get(f"{PULLS_URL}{pr.pk}/change/")

    # Then it is shown without a form to save
    assert response.status_code == 200
    assert "Add retries" in page(response)
    assert 'name="_save"' not in page(response)


def test_pull_request_changelist_search_finds_by_title(admin_client):
    # Given two pull requests
    tracked = repo(integration_for("acme"), "acme/widgets")
    pull(tracked, 1, "Add exponential backoff")
    pull(tracked, 2, "Fix typo in README")

    # When the operator searches for a word of one title
    response = admin_client.get(PULLS_URL, {"q": "backoff"})

    # Then only that pull request is listed
    assert response.status_code == 200
    assert "Add exponential backoff" in page(response)
    assert "Fix typo in README" not in page(response)
