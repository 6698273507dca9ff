from __future__ import annotations

import os
from typing import Any

from django.core.management.base import CommandParser

from apps.integrations.management.commands._base import EXIT_TEMPFAIL, OperatorCommand
from apps.integrations.services.github_client import (
    GitHubError,
    GitHubNotFound,
    GitHubRateLimited,
    GitHubTransientError,
    GitHubUnauthorized,
)
from apps.integrations.services.rate_limits import earliest_retry
from apps.integrations.services.sync_outcome import rate_limited_message
from apps.integrations.services.tracking import InvalidInput, repository_track


class Command(OperatorCommand):
    help = (
        "Track a GitHub repository for a team, checking the repository and the token against "
        "GitHub first. Creates the team, integration and credential as needed; a new token "
        "replaces the team's credential and reconnects it."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("full_name", metavar="OWNER/NAME")
        parser.add_argument("--team", required=True, metavar="SLUG", help="team slug")
        parser.add_argument(
            "--token-env",
            default="GITHUB_TOKEN",
            metavar="VAR",
            help="environment variable holding the GitHub token (default: GITHUB_TOKEN)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        token = os.environ.get(options["token_env"], "").strip()
        if not token:
            self.fail(f"environment variable {options['token_env']} is not set or empty")
        try:
            result = repository_track(
                full_name=options["full_name"], team_slug=options["team"], token=token
            )
        except InvalidInput as exc:
            self.fail(str(exc))
        except GitHubUnauthorized:
            self.fail(f"GitHub rejected the token in {options['token_env']} (401 Bad credentials)")
        except GitHubNotFound:
            self.fail(
                f"repository {options['full_name']} not found on GitHub "
                "(or the token cannot see it)"
            )
        except GitHubRateLimited as exc:
            self.fail(rate_limited_message(earliest_retry(exc)), code=EXIT_TEMPFAIL)
        except GitHubTransientError as exc:
            self.fail(f"GitHub is unavailable: {exc}", code=EXIT_TEMPFAIL)
        except GitHubError as exc:
            self.fail(str(exc))

        repo = result.tracked_repo
        team = options["team"]
        if result.reconnected:
            self.stdout.write(f"Reconnected the GitHub integration of team {team}.")
        if result.created:
            self.stdout.write(f"Now tracking {repo.full_name} for team {team}.")
        else:
            self.stdout.write(f"{repo.full_name} is already tracked for team {team}.")
