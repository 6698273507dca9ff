from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import CommandParser

from apps.integrations.management.commands._base import EXIT_TEMPFAIL, OperatorCommand
from apps.integrations.models import TrackedRepository
from apps.integrations.services.github_client import (
    GitHubError,
    GitHubRateLimited,
    GitHubTransientError,
)
from apps.integrations.services.rate_limits import earliest_retry
from apps.integrations.services.sync_outcome import rate_limited_message
from apps.integrations.services.tracking import InvalidInput
from apps.integrations.services.webhook_registration import (
    current_webhook_secret,
    validate_webhook_url,
    webhook_register,
)


class Command(OperatorCommand):
    help = (
        "Register (or repair) the GitHub hook that pushes pull_request and repository events "
        "to the receiver at --url, with the first GITHUB_WEBHOOK_SECRET. Idempotent. "
        "Repositories whose hook cannot be registered keep syncing by polling."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("full_names", nargs="*", metavar="OWNER/NAME")
        parser.add_argument("--all", action="store_true", help="every active tracked repository")
        parser.add_argument(
            "--url",
            default=None,
            help="the receiver's public URL, e.g. https://HOST/webhooks/github/ "
            "(default: GITHUB_WEBHOOK_URL)",
        )
        parser.add_argument("--team", metavar="SLUG", help="only this team's repositories")

    def handle(self, *args: Any, **options: Any) -> None:
        names: list[str] = options["full_names"]
        if bool(names) == bool(options["all"]):
            self.fail("name repositories (OWNER/NAME ...) or pass --all, not both")
        try:
            url = validate_webhook_url(options["url"] or settings.GITHUB_WEBHOOK_URL)
            current_webhook_secret()
            repos = self._repositories(names, options["all"], options["team"])
        except InvalidInput as exc:
            self.fail(str(exc))

        registered = permanent = temporary = 0
        for repo in repos:
            label = f"{repo.full_name} (team {repo.team.slug})"
            try:
                result = webhook_register(tracked_repo=repo, url=url)
            except GitHubRateLimited as exc:
                temporary += 1
                self.stderr.write(f"error: {label}: {rate_limited_message(earliest_retry(exc))}")
                continue
            except GitHubTransientError as exc:
                temporary += 1
                self.stderr.write(f"error: {label}: GitHub is unavailable: {exc}")
                continue
            except GitHubError as exc:
                permanent += 1
                self.stderr.write(f"error: {label}: {exc}")
                continue
            registered += 1
            self.stdout.write(f"{label}: hook {result.hook_id} {result.action}")
        if len(repos) > 1 or options["all"]:
            failed = permanent + temporary
            self.stdout.write(f"{registered} registered, {failed} failed")
        if permanent:
            raise SystemExit(1)
        if temporary:
            raise SystemExit(EXIT_TEMPFAIL)

    def _repositories(
        self, names: list[str], every: bool, team: str | None
    ) -> list[TrackedRepository]:
        """The repositories to register, all checked before anything is sent."""
        base = TrackedRepository.objects.select_related("team", "integration").order_by("pk")
        if team:
            base = base.filter(team__slug=team)
        if every:
            return list(base.filter(is_active=True))
        repos: list[TrackedRepository] = []
        for name in dict.fromkeys(names):
            matches = list(base.named(name))
            if not matches:
                raise InvalidInput(
                    f"{name} is not tracked"
                    + (f" by team {team}" if team else "")
                    + "; track it first with: manage.py track_repo OWNER/NAME --team SLUG"
                )
            inactive = [m for m in matches if not m.is_active]
            if inactive:
                raise InvalidInput(
                    f"{name} is inactive (untracked) for team {inactive[0].team.slug}; "
                    "reactivate it in the admin first"
                )
            repos.extend(matches)
        return repos
