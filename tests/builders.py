"""Small builders for test data (rows in our database, records in the emulator)."""

from __future__ import annotations

import io
import secrets
from datetime import UTC, datetime

from django.core.management import call_command

from apps.integrations.models import (
    GitHubIntegration,
    IntegrationCredential,
    PullRequest,
    TrackedRepository,
)
from apps.teams.models import Team
from devtools.github_truth import pull_request_differences

TOKEN = "ghp_testtoken0000000000000000000000000001"


def tracked_repo(
    emulator,
    full_name: str = "acme/widgets",
    *,
    team_slug: str = "acme",
    token: str = TOKEN,
) -> TrackedRepository:
    """A repository in the emulator, tracked by ``team_slug`` with a connected integration."""
    try:
        github_repo = emulator.get_repo(full_name)
    except KeyError:
        github_repo = emulator.add_repo(full_name)
    team, _ = Team.objects.get_or_create(slug=team_slug, defaults={"name": team_slug})
    integration, _ = GitHubIntegration.objects.get_or_create(
        team=team, defaults={"account_login": "octocat"}
    )
    IntegrationCredential.objects.update_or_create(
        integration=integration, defaults={"access_token": token}
    )
    return TrackedRepository.objects.create(
        team=team,
        integration=integration,
        github_repo_id=github_repo.id,
        full_name=github_repo.full_name,
    )


def is_detail_request(request) -> bool:
    """A request for PR detail fields: REST ``/pulls/N`` or a GraphQL query."""
    return "/pulls/" in request.path or request.path.endswith("/graphql")


def detail_fetches(emulator, *, after: int = 0) -> list[int]:
    """Numbers of the PRs whose details GitHub served (REST or GraphQL), in request order;
    ``after``: only requests with a later sequence number."""
    numbers: list[int] = []
    for request in emulator.requests:
        if request.status != 200 or request.seq <= after:
            continue
        if "/pulls/" in request.path:
            numbers.append(int(request.path.rsplit("/", 1)[1]))
        elif request.path.endswith("/graphql") and request.graphql_cost:
            numbers.extend(request.graphql_numbers)
    return numbers


def new_token() -> str:
    return "ghp_" + secrets.token_hex(18)


def connected_team(slug: str, *, token: str | None = None, repos: int = 1) -> GitHubIntegration:
    """A team with a connected integration, ``repos`` tracked repositories, one PR each."""
    team = Team.objects.create(slug=slug, name=slug.title())
    integration = GitHubIntegration.objects.create(team=team, account_login=f"{slug}-bot")
    IntegrationCredential.objects.create(integration=integration, access_token=token or new_token())
    when = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    for index in range(repos):
        repo = TrackedRepository.objects.create(
            team=team,
            integration=integration,
            github_repo_id=1000 * (team.pk or 0) + index,
            full_name=f"{slug}/repo-{index}",
        )
        PullRequest.objects.create(
            team=team,
            tracked_repo=repo,
            github_id=500_000 + repo.pk,
            number=1,
            title=f"Improve {repo.full_name}",
            state=PullRequest.State.OPEN,
            author_login="octocat",
            github_created_at=when,
            github_updated_at=when,
            html_url=f"https://github.com/{repo.full_name}/pull/1",
        )
    return integration


def assert_matches_github(emulator, repo: TrackedRepository, *, since=None) -> None:
    """The database holds exactly GitHub's pull requests of ``repo`` updated at or after
    ``since`` (default: all of them): none missing, none stale, none extra."""
    found = pull_request_differences(emulator, repo, since=since)
    assert (found.missing, found.stale, found.extra) == ([], [], []), (
        "missing, stale, extra PR numbers"
    )


def run_command(*args: str) -> tuple[int, str, str]:
    """Run a management command in-process; return (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command(*args, stdout=out, stderr=err)
        code = 0
    except SystemExit as exc:
        code = exc.code
    return code, out.getvalue(), err.getvalue()
