from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from apps.integrations.management.commands._base import OperatorCommand
from apps.integrations.services.tracking import repository_untrack


class Command(OperatorCommand):
    help = (
        "Stop syncing a tracked repository (its pull requests are kept) and delete its "
        "webhook on GitHub. track_repo tracks it again."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("full_name", metavar="OWNER/NAME")
        parser.add_argument("--team", metavar="SLUG", help="needed when two teams track it")

    def handle(self, *args: Any, **options: Any) -> None:
        full_name, team = options["full_name"], options["team"]
        tracked_repo = self.find_tracked_repository(full_name, team)
        result = repository_untrack(tracked_repo=tracked_repo, reason="untracked by an operator")
        repo = result.tracked_repo
        if not result.was_active:
            self.stdout.write(f"{repo.full_name} was not tracked for team {repo.team.slug}.")
        else:
            self.stdout.write(f"Stopped tracking {repo.full_name} for team {repo.team.slug}.")
        if not result.hook_deleted:
            # The repository is untracked all the same; the hook is left for a person.
            self.stderr.write(
                f"warning: its webhook could not be deleted on GitHub ({repo.webhook_error}); "
                "delete it in the repository's settings"
            )
