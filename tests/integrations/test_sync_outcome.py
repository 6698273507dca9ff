"""The outcome service: the only writer of sync_status, last_sync_error and last_sync_at."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.integrations.models import (
    GitHubIntegration,
    IntegrationCredential,
    PullRequest,
    TrackedRepository,
)
from apps.integrations.services import sync_outcome
from tests.builders import connected_team


@pytest.mark.django_db
def test_rejected_credentials_disconnect_and_keep_the_data():
    # Given a connected integration with repositories and pull requests
    integration = connected_team("acme", repos=2)
    assert integration.is_connected

    # When GitHub rejects its credentials
    sync_outcome.integration_credentials_rejected(integration=integration)

    # Then the credential is gone (even on the object in hand) and everything else stays
    assert not integration.is_connected
    assert not IntegrationCredential.objects.filter(integration=integration).exists()
    assert GitHubIntegration.objects.filter(pk=integration.pk).exists()
    assert TrackedRepository.objects.filter(integration=integration).count() == 2
    assert PullRequest.objects.filter(tracked_repo__integration=integration).count() == 2


@pytest.mark.django_db
def test_rejected_credentials_mark_every_repository_of_the_integration_in_error():
    # Given a connected integration with three repositories in different states
    integration = connected_team("acme", repos=3)
    first, second, _ = TrackedRepository.objects.filter(integration=integration).order_by("pk")
    sync_outcome.repository_sync_succeeded(tracked_repo=first)
    sync_outcome.repository_sync_failed(tracked_repo=second, message="502 Bad Gateway")

    # When GitHub rejects its credentials
    count = sync_outcome.integration_credentials_rejected(integration=integration)

    # Then every repository is in error and says the credentials were rejected
    repos = TrackedRepository.objects.filter(integration=integration)
    assert count == 3
    assert {r.sync_status for r in repos} == {TrackedRepository.SyncStatus.ERROR}
    for repo in repos:
        assert "rejected the credentials" in repo.last_sync_error


@pytest.mark.django_db
def test_rejected_credentials_leave_another_teams_integration_alone():
    # Given two teams, each connected
    acme = connected_team("acme", repos=2)
    other = connected_team("globex", repos=2)

    # When GitHub rejects one team's credentials
    sync_outcome.integration_credentials_rejected(integration=acme)

    # Then the other team is still connected and its repositories untouched
    assert GitHubIntegration.objects.get(pk=other.pk).is_connected
    for repo in TrackedRepository.objects.filter(integration=other):
        assert repo.sync_status == TrackedRepository.SyncStatus.IDLE
        assert repo.last_sync_error == ""


# -- error messages --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "secret",
    [
        "ghp_" + "a1B2" * 9,
        "gho_" + "Z9y8" * 9,
        "ghs_" + "Q7w6" * 9,
        "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz0123456789",
    ],
)
def test_error_message_redacts_github_tokens(secret):
    # Given an exception text that carries a token
    message = f"GET https://api.github.com/user?access_token={secret} failed: 502"

    # When it is made safe for last_sync_error
    safe = sync_outcome.safe_error_message(message)

    # Then the token is replaced and the rest kept
    assert secret not in safe
    assert secret[8:] not in safe
    assert "[redacted]" in safe
    assert safe.endswith("failed: 502")


@pytest.mark.parametrize("header", ["token", "Token", "Bearer", "bearer"])
def test_error_message_redacts_authorization_header_values(header):
    # Given a message quoting an Authorization header with a non-prefixed credential
    credential = "abc123def456ghi789"
    message = f"request with Authorization: {header} {credential} was refused"

    # When it is made safe
    safe = sync_outcome.safe_error_message(message)

    # Then the credential is gone
    assert credential not in safe
    assert "[redacted]" in safe


def test_error_message_is_one_line_of_at_most_500_characters():
    # Given a long multi-line exception text
    message = "Traceback line\n" + ("x" * 80 + "\n\t") * 20

    # When it is made safe
    safe = sync_outcome.safe_error_message(message)

    # Then it is a single line capped at 500 characters, marked as cut
    assert "\n" not in safe and "\t" not in safe
    assert len(safe) == 500
    assert safe.endswith("…")
    assert safe.startswith("Traceback line x")


def test_short_error_message_is_kept_as_is():
    assert sync_outcome.safe_error_message("404 Not Found") == "404 Not Found"


# -- failures never overwrite a sync that is running -----------------------------------------


@pytest.mark.django_db
def test_failure_is_not_recorded_over_a_sync_that_holds_the_lease():
    # Given a retry of a failed message already running (it holds the lease, shows syncing)
    repo = TrackedRepository.objects.get(integration=connected_team("acme"))
    TrackedRepository.objects.filter(pk=repo.pk).update(
        sync_status="syncing",
        sync_lease_owner="worker-b",
        sync_lease_expires_at=timezone.now() + timedelta(seconds=60),
    )

    # When the earlier attempt's failure is recorded late
    sync_outcome.repository_sync_retrying(tracked_repo=repo, message="502 (retry 1 of 5)")
    sync_outcome.repository_sync_failed(tracked_repo=repo, message="502")

    # Then the running sync's status stands
    assert TrackedRepository.objects.values_list("sync_status", "last_sync_error").get(
        pk=repo.pk
    ) == ("syncing", "")


@pytest.mark.django_db
def test_failure_is_recorded_once_the_lease_has_lapsed():
    repo = TrackedRepository.objects.get(integration=connected_team("acme"))
    TrackedRepository.objects.filter(pk=repo.pk).update(
        sync_status="syncing",
        sync_lease_owner="worker-b",
        sync_lease_expires_at=timezone.now() - timedelta(seconds=1),
    )

    sync_outcome.repository_sync_failed(tracked_repo=repo, message="502 Bad Gateway")

    assert TrackedRepository.objects.values_list("sync_status", "last_sync_error").get(
        pk=repo.pk
    ) == ("error", "502 Bad Gateway")


@pytest.mark.django_db
def test_reconnecting_clears_only_the_credentials_error():
    integration = connected_team("acme", repos=2)
    first, second = TrackedRepository.objects.filter(integration=integration).order_by("pk")
    sync_outcome.integration_credentials_rejected(integration=integration)
    sync_outcome.repository_sync_failed(tracked_repo=second, message="404 Not Found")

    sync_outcome.integration_reconnected(integration=integration)

    assert TrackedRepository.objects.values_list("sync_status", "last_sync_error").get(
        pk=first.pk
    ) == ("idle", "")
    assert TrackedRepository.objects.get(pk=second.pk).last_sync_error == "404 Not Found"


@pytest.mark.django_db
def test_reconnecting_clears_the_disconnected_error_the_sweep_recorded():
    integration = connected_team("acme", repos=1)
    repo = TrackedRepository.objects.get(integration=integration)
    TrackedRepository.objects.filter(pk=repo.pk).update(sync_status="queued")
    sync_outcome.repository_sync_abandoned(tracked_repo_ids=[repo.pk], reason="disconnected")
    assert TrackedRepository.objects.get(pk=repo.pk).sync_status == "error"

    sync_outcome.integration_reconnected(integration=integration)

    assert TrackedRepository.objects.values_list("sync_status", "last_sync_error").get(
        pk=repo.pk
    ) == ("idle", "")


@pytest.mark.django_db
def test_every_status_change_records_when_it_happened():
    integration = connected_team("acme", repos=1)
    repo = TrackedRepository.objects.get(integration=integration)
    before = timezone.now()

    sync_outcome.repository_sync_started(tracked_repo=repo)

    repo.refresh_from_db()
    assert repo.sync_status == "syncing" and repo.sync_status_changed_at >= before
