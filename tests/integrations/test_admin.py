"""The Django admin as an operator uses it: repositories, credentials, pull requests."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from django.db.models.signals import pre_save

from apps.integrations.models import (
    GitHubIntegration,
    PullRequest,
    TrackedRepository,
)
from apps.integrations.services import sync_outcome
from tests.builders import connected_team, new_token
from tests.integrations.test_credentials import stored_ciphertext

pytestmark = pytest.mark.django_db

REPOS_URL = "/admin/integrations/trackedrepository/"
CREDENTIALS_URL = "/admin/integrations/integrationcredential/"
INTEGRATIONS_URL = "/admin/integrations/githubintegration/"
PULLS_URL = "/admin/integrations/pullrequest/"
TEAMS_URL = "/admin/teams/team/"
WHEN = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def integration_for(slug: str, *, token: str | None = None) -> GitHubIntegration:
    return connected_team(slug, token=token, repos=0)


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


def test_saving_a_repository_in_the_admin_keeps_what_a_sync_wrote_meanwhile(admin_client):
    # Given a repository, and a sync that commits to it while the operator's save is under way
    tracked = repo(integration_for("acme"), "acme/widgets")

    def sync_commits_meanwhile(sender, instance, **kwargs):
        TrackedRepository.objects.filter(pk=instance.pk).update(
            sync_status=TrackedRepository.SyncStatus.SYNCING, sync_watermark=WHEN
        )

    pre_save.connect(sync_commits_meanwhile, sender=TrackedRepository)
    try:
        # When the operator switches the repository off
        response = admin_client.post(f"{REPOS_URL}{tracked.pk}/change/", {"_save": "Save"})
    finally:
        pre_save.disconnect(sync_commits_meanwhile, sender=TrackedRepository)

    # Then only that changed: the sync's write stands
    assert response.status_code == 302
    row = TrackedRepository.objects.get(pk=tracked.pk)
    assert row.is_active is False
    assert (row.sync_status, row.sync_watermark) == ("syncing", WHEN)


# -- credentials -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Stored:
    """A connected team with a repository; its token must appear on no admin page."""

    integration: GitHubIntegration
    repository: TrackedRepository
    token: str
    ciphertext: str  # the access_token column as the database holds it

    def found_in(self, html: str) -> list[str]:
        """Which secrets ``html`` shows, whole or by a piece of their random part (a page
        that cut a secret short would still leak most of it)."""
        pieces = {
            "token": self.token,
            "token without its prefix": self.token[4:],
            "piece of the token": self.token[12:28],
            "ciphertext": self.ciphertext,
            "piece of the ciphertext": self.ciphertext[16:48],  # the random IV
        }
        return [name for name, piece in pieces.items() if piece in html]


@pytest.fixture
def stored(admin_client) -> Stored:
    token = new_token()
    integration = integration_for("acme", token=token)
    tracked = repo(integration, "acme/widgets")
    # A failure whose message quoted the token, recorded the way every failure is.
    sync_outcome.repository_sync_failed(tracked_repo=tracked, message=f"401 with token {token}")
    # Something for the history pages: the operator switched the repository off and saved
    # the integration.
    admin_client.post(f"{REPOS_URL}{tracked.pk}/change/", {"_save": "Save"})
    admin_client.post(f"{INTEGRATIONS_URL}{integration.pk}/change/", {"_save": "Save"})
    return Stored(integration, tracked, token, stored_ciphertext(integration.credential))


ADMIN_PAGES = {
    "credential-list": lambda s: CREDENTIALS_URL,
    "credential-page": lambda s: f"{CREDENTIALS_URL}{s.integration.credential.pk}/change/",
    "credential-history": lambda s: f"{CREDENTIALS_URL}{s.integration.credential.pk}/history/",
    "credential-delete": lambda s: f"{CREDENTIALS_URL}{s.integration.credential.pk}/delete/",
    "integration-list": lambda s: INTEGRATIONS_URL,
    "integration-page": lambda s: f"{INTEGRATIONS_URL}{s.integration.pk}/change/",
    "integration-history": lambda s: f"{INTEGRATIONS_URL}{s.integration.pk}/history/",
    "integration-delete": lambda s: f"{INTEGRATIONS_URL}{s.integration.pk}/delete/",
    "repository-list": lambda s: REPOS_URL,
    "repository-page": lambda s: f"{REPOS_URL}{s.repository.pk}/change/",
    "repository-history": lambda s: f"{REPOS_URL}{s.repository.pk}/history/",
    "repository-delete": lambda s: f"{REPOS_URL}{s.repository.pk}/delete/",
    # Deleting a team lists everything that goes with it, the credential included.
    "team-delete": lambda s: f"{TEAMS_URL}{s.integration.team_id}/delete/",
    "recent-actions": lambda s: "/admin/",
}


@pytest.mark.parametrize("url", ADMIN_PAGES.values(), ids=ADMIN_PAGES.keys())
def test_admin_pages_show_neither_the_token_nor_its_ciphertext(admin_client, stored, url):
    response = admin_client.get(url(stored))

    assert response.status_code == 200
    assert stored.found_in(page(response)) == []


BULK_DELETES = {
    "credentials": lambda s: (CREDENTIALS_URL, s.integration.credential.pk),
    "integrations": lambda s: (INTEGRATIONS_URL, s.integration.pk),
    "repositories": lambda s: (REPOS_URL, s.repository.pk),
    "teams": lambda s: (TEAMS_URL, s.integration.team_id),
}


@pytest.mark.parametrize("target", BULK_DELETES.values(), ids=BULK_DELETES.keys())
def test_bulk_delete_confirmation_shows_neither_the_token_nor_its_ciphertext(
    admin_client, stored, target
):
    url, pk = target(stored)

    response = admin_client.post(url, {"action": "delete_selected", "_selected_action": [pk]})

    assert response.status_code == 200
    assert "<title>Delete multiple objects" in page(response)
    assert stored.found_in(page(response)) == []


@pytest.mark.parametrize("url", [INTEGRATIONS_URL, REPOS_URL], ids=["integrations", "repositories"])
@pytest.mark.parametrize("secret", ["token", "ciphertext"])
def test_admin_search_does_not_match_the_token_or_its_ciphertext(admin_client, stored, url, secret):
    piece = getattr(stored, secret)[16:48]

    response = admin_client.get(url, {"q": piece})

    assert response.status_code == 200
    assert response.context["cl"].result_count == 0


@pytest.mark.parametrize(
    "url",
    [
        f"{CREDENTIALS_URL}?access_token__startswith=",
        f"{CREDENTIALS_URL}?access_token__contains=",
        f"{CREDENTIALS_URL}?access_token__regex=^",
        f"{INTEGRATIONS_URL}?credential__access_token__startswith=",
        f"{REPOS_URL}?integration__credential__access_token__startswith=",
    ],
    ids=["credential-startswith", "credential-contains", "credential-regex", "integration", "repo"],
)
def test_admin_lists_cannot_be_filtered_on_the_ciphertext(admin_client, stored, url):
    # A filter that matched would tell its result count, and so the ciphertext, one guessed
    # character at a time.
    response = admin_client.get(url + stored.ciphertext[:8])

    assert response.status_code == 400


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


def test_pull_request_cannot_be_deleted_in_the_admin(admin_client):
    # Given a synced pull request
    pr = pull(repo(integration_for("acme"), "acme/widgets"), 7, "Add retries")

    # When someone confirms its deletion
    response = admin_client.post(f"{PULLS_URL}{pr.pk}/delete/", {"post": "yes"})

    # Then the deletion is refused and the row is still there
    assert response.status_code == 403
    assert PullRequest.objects.filter(pk=pr.pk).exists()


def test_pull_requests_cannot_be_deleted_in_bulk_from_the_list(admin_client):
    # Given synced pull requests
    tracked = repo(integration_for("acme"), "acme/widgets")
    prs = [pull(tracked, 1, "Add retries"), pull(tracked, 2, "Fix typo")]

    # When someone posts the bulk delete action, confirmed, for them
    response = admin_client.post(
        PULLS_URL,
        {"action": "delete_selected", "_selected_action": [pr.pk for pr in prs], "post": "yes"},
    )

    # Then the list is shown again without deleting anything
    assert response.status_code == 200
    assert PullRequest.objects.count() == 2


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
