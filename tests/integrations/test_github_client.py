"""How GitHub's answers become this project's typed errors (over real HTTP, no mocks)."""

from __future__ import annotations

import socket
import time
from datetime import UTC, datetime, timedelta

import pytest

from apps.integrations.models import IntegrationCredential
from apps.integrations.services.github_client import (
    GitHubDeepPaginationError,
    GitHubNotConnected,
    GitHubNotFound,
    GitHubPrimaryRateLimit,
    GitHubSecondaryRateLimit,
    GitHubTransientError,
    GitHubUnauthorized,
    client_for_integration,
    client_for_token,
)
from devtools.github_emulator import GitHubEmulator
from tests import builders

REPO = "acme/widgets"


@pytest.fixture
def client(emulator):
    emulator.add_repo(REPO)
    return client_for_token(builders.TOKEN)


def test_primary_rate_limit_raises_at_once_with_githubs_reset_time(emulator, client):
    reset_at = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
    emulator.set_rate_limit(builders.TOKEN, remaining=0, reset_at=reset_at)

    started = time.monotonic()
    with pytest.raises(GitHubPrimaryRateLimit) as raised:
        client.get_repository(REPO)

    # PyGithub's default retry would sleep here until the reset, an hour away; a minute
    # is far above one local request on a busy machine.
    assert time.monotonic() - started < 60
    assert raised.value.reset_at == reset_at
    assert client.requests_made == 1


@pytest.mark.parametrize("status", [403, 429])
def test_secondary_rate_limit_carries_retry_after(emulator, client, status):
    emulator.secondary_limit_next(status=status, retry_after=42)

    with pytest.raises(GitHubSecondaryRateLimit) as raised:
        client.get_repository(REPO)

    assert raised.value.retry_after == 42 and raised.value.status == status
    assert not isinstance(raised.value, GitHubPrimaryRateLimit)


def test_secondary_rate_limit_without_retry_after_says_so(emulator, client):
    emulator.secondary_limit_next(status=403, retry_after=None)

    with pytest.raises(GitHubSecondaryRateLimit) as raised:
        client.get_repository(REPO)

    # How long to wait then is services.rate_limits' rule, not the client's.
    assert raised.value.retry_after is None and raised.value.reset_at is None


def test_rejected_token_raises_unauthorized(emulator, client):
    emulator.revoke_token(builders.TOKEN)

    with pytest.raises(GitHubUnauthorized):
        client.get_repository(REPO)


def test_unknown_repository_raises_not_found(emulator, client):
    with pytest.raises(GitHubNotFound):
        client.get_repository("acme/nothing-here")


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_are_transient(emulator, client, status):
    emulator.fail_next(status=status)

    with pytest.raises(GitHubTransientError) as raised:
        client.get_repository(REPO)

    assert raised.value.status == status


def test_unreachable_github_is_transient(settings):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings.GITHUB_API_URL = f"http://127.0.0.1:{port}"

    with pytest.raises(GitHubTransientError):
        client_for_token(builders.TOKEN).get_repository(REPO)


def test_slow_github_times_out_as_transient(emulator, client, settings):
    settings.GITHUB_TIMEOUT = 1
    emulator.latency = 2.5

    with pytest.raises(GitHubTransientError):
        client_for_token(builders.TOKEN).get_repository(REPO)


def test_page_past_the_deep_page_limit_is_typed(emulator, client):
    with pytest.raises(GitHubDeepPaginationError):
        client.list_issues_page(REPO, since=None, page=101, per_page=100)


def test_enterprise_server_prefix_works(settings):
    with GitHubEmulator(prefix="/api/v3") as emu:
        emu.add_token(builders.TOKEN)
        emu.add_repo(REPO)
        settings.GITHUB_API_URL = emu.api_url

        data = client_for_token(builders.TOKEN).get_repository(REPO)

    assert data["full_name"] == REPO
    assert emu.requests[0].path == f"/repos/{REPO}"


def test_error_messages_never_contain_the_token(emulator, client):
    emulator.revoke_token(builders.TOKEN)
    with pytest.raises(GitHubUnauthorized) as unauthorized:
        client.get_repository(REPO)
    emulator.add_token(builders.TOKEN)
    emulator.fail_next(status=502)
    with pytest.raises(GitHubTransientError) as transient:
        client.get_repository(REPO)

    for error in (unauthorized.value, transient.value):
        assert builders.TOKEN not in str(error) and builders.TOKEN not in repr(error)


@pytest.mark.django_db
def test_disconnected_integration_raises_without_asking_github(emulator):
    repo = builders.tracked_repo(emulator, REPO)
    IntegrationCredential.objects.filter(integration=repo.integration).delete()
    repo.integration.refresh_from_db()

    with pytest.raises(GitHubNotConnected):
        client_for_integration(repo.integration)

    assert emulator.requests == []


@pytest.mark.django_db
def test_client_for_integration_authenticates_with_the_decrypted_token(emulator):
    repo = builders.tracked_repo(emulator, REPO)

    client_for_integration(repo.integration).get_repository(REPO)

    assert emulator.requests[0].token == builders.TOKEN


def test_graphql_details_keep_the_found_prs_when_some_are_missing(emulator, client, days_ago):
    pr = emulator.add_pull(REPO, title="Found", author=None, additions=5, commits=2)
    issue = emulator.add_issue(REPO)

    details = client.get_pulls_details(REPO, [pr.number, issue.number, 999])

    assert set(details.found) == {pr.number}
    assert sorted(details.missing) == [issue.number, 999]
    node = details.found[pr.number]
    assert (node["title"], node["author"], node["additions"]) == ("Found", None, 5)
    assert client.requests_made == 1


def test_graphql_rate_limit_raises_primary_limit_with_its_reset(emulator, client):
    pr = emulator.add_pull(REPO)
    reset_at = (datetime.now(UTC) + timedelta(minutes=30)).replace(microsecond=0)
    emulator.set_graphql_rate_limit(builders.TOKEN, remaining=0, reset_at=reset_at)

    with pytest.raises(GitHubPrimaryRateLimit) as raised:
        client.get_pulls_details(REPO, [pr.number])

    assert raised.value.reset_at == reset_at


def test_graphql_details_of_an_unknown_repository_raise_not_found(emulator, client):
    with pytest.raises(GitHubNotFound):
        client.get_pulls_details("acme/nothing-here", [1])


def test_graphql_works_behind_an_enterprise_prefix(settings):
    with GitHubEmulator(prefix="/api/v3") as emu:
        emu.add_token(builders.TOKEN)
        pr = emu.add_pull(REPO)
        settings.GITHUB_API_URL = emu.api_url

        details = client_for_token(builders.TOKEN).get_pulls_details(REPO, [pr.number])

    assert set(details.found) == {pr.number}


def test_unchanged_listing_answers_304_without_costing_rate_limit(emulator, client):
    emulator.add_pull(REPO)
    first = client.list_issues_page(REPO, since=None)
    used = emulator.token_state(builders.TOKEN).used

    again = client.list_issues_page(REPO, since=None, etag=first.etag)

    assert first.etag and again.not_modified and again.items == []
    assert emulator.requests[-1].status == 304
    assert emulator.token_state(builders.TOKEN).used == used
    client.get_repository(REPO)  # an ordinary answer does count
    assert emulator.token_state(builders.TOKEN).used == used + 1
