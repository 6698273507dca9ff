"""Small builders for test data (rows in our database, records in the emulator)."""

from __future__ import annotations

from apps.integrations.models import GitHubIntegration, IntegrationCredential, TrackedRepository
from apps.teams.models import Team

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


def detail_fetches(emulator) -> list[int]:
    """Numbers of the PRs whose details GitHub served (REST or GraphQL), in request order."""
    numbers: list[int] = []
    for request in emulator.requests:
        if request.status != 200:
            continue
        if "/pulls/" in request.path:
            numbers.append(int(request.path.rsplit("/", 1)[1]))
        elif request.path.endswith("/graphql") and request.graphql_cost:
            numbers.extend(request.graphql_numbers)
    return numbers
