"""Starting to track a repository: validate against GitHub first, then write everything."""

from __future__ import annotations

import re
from dataclasses import dataclass

from django.db import transaction
from django.utils.text import slugify

from apps.integrations.models import GitHubIntegration, IntegrationCredential, TrackedRepository
from apps.integrations.services import sync_outcome
from apps.integrations.services.github_client import GitHubClient, client_for_token
from apps.teams.models import Team

# GitHub's rules: owners are 1-39 alphanumerics or single hyphens; repository names are up to
# 100 of [A-Za-z0-9._-], and "." / ".." are reserved.
_OWNER = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9]|-(?=[A-Za-z0-9])){0,38}$")
_REPO = re.compile(r"^[A-Za-z0-9._-]{1,100}$")


class InvalidInput(ValueError):
    """The operator's input is not acceptable; the message says why, in one line."""


def validate_full_name(full_name: str) -> str:
    parts = full_name.strip().split("/")
    if len(parts) != 2 or not _OWNER.match(parts[0]) or not _REPO.match(parts[1]):
        raise InvalidInput(f"invalid repository name {full_name!r}: expected OWNER/NAME")
    if parts[1] in {".", ".."}:
        raise InvalidInput(f"invalid repository name {full_name!r}: expected OWNER/NAME")
    return "/".join(parts)


def validate_team_slug(slug: str) -> str:
    if not slug or slugify(slug) != slug:
        raise InvalidInput(
            f"invalid team slug {slug!r}: use lower-case letters, digits, '-' and '_'"
        )
    return slug


@dataclass(frozen=True)
class TrackResult:
    tracked_repo: TrackedRepository
    created: bool
    integration_created: bool
    reconnected: bool


def repository_track(
    *, full_name: str, team_slug: str, token: str, client: GitHubClient | None = None
) -> TrackResult:
    """Track ``full_name`` for team ``team_slug`` with ``token``.

    Checks the token and the repository against GitHub before writing anything, so a bad
    name, an unknown repository or a rejected token leaves the database untouched (raises
    InvalidInput or a GitHubError). Creates the team, integration, credential and tracked
    repository as needed; for a team that already has an integration, the token replaces its
    credential, which reconnects it.
    """
    full_name = validate_full_name(full_name)
    team_slug = validate_team_slug(team_slug)
    if not token:
        raise InvalidInput("the GitHub token is empty")
    client = client or client_for_token(token)
    login = client.get_authenticated_user()["login"]
    repo = client.get_repository(full_name)

    with transaction.atomic():
        team, _ = Team.objects.get_or_create(slug=team_slug, defaults={"name": team_slug})
        integration, integration_created = GitHubIntegration.objects.for_team(team).get_or_create(
            team=team, defaults={"account_login": login}
        )
        was_connected = integration_created or integration.is_connected
        if integration.account_login != login:
            integration.account_login = login
            integration.save(update_fields=["account_login", "updated_at"])
        IntegrationCredential.objects.update_or_create(
            integration=integration, defaults={"access_token": token}
        )
        reconnected = not was_connected
        sync_outcome.integration_reconnected(integration=integration)

        existing = TrackedRepository.objects.for_team(team).named(repo["full_name"]).first()
        if existing is not None:
            if not existing.is_active:
                existing.is_active, existing.inactive_reason = True, ""
                existing.save(update_fields=["is_active", "inactive_reason", "updated_at"])
            return TrackResult(existing, False, integration_created, reconnected)
        tracked = TrackedRepository.objects.create(
            team=team,
            integration=integration,
            github_repo_id=repo["id"],
            full_name=repo["full_name"],
        )
        return TrackResult(tracked, True, integration_created, reconnected)


@dataclass(frozen=True)
class UntrackResult:
    tracked_repo: TrackedRepository
    was_active: bool
    hook_deleted: bool  # False: GitHub could not be asked; ``webhook_error`` says why


def repository_untrack(*, tracked_repo: TrackedRepository, reason: str = "") -> UntrackResult:
    """Stop syncing ``tracked_repo`` (its pull requests stay) and delete its hook on GitHub.

    The hook goes best effort, after the row is inactive: a failure is logged and recorded
    in ``webhook_error`` and never keeps the repository tracked.
    """
    from apps.integrations.services.webhook_registration import webhook_unregister

    was_active = tracked_repo.is_active
    TrackedRepository.objects.filter(pk=tracked_repo.pk).update(
        is_active=False, inactive_reason=reason[:255]
    )
    tracked_repo.is_active, tracked_repo.inactive_reason = False, reason[:255]
    hook_deleted = webhook_unregister(tracked_repo=tracked_repo)
    return UntrackResult(tracked_repo, was_active, hook_deleted)
