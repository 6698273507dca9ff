from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from apps.integrations.management.commands._base import EXIT_TEMPFAIL, OperatorCommand
from apps.integrations.models import TrackedRepository
from apps.integrations.services import sync_outcome
from apps.integrations.services.github_client import (
    GitHubError,
    GitHubNotConnected,
    GitHubRateLimited,
    GitHubTransientError,
    GitHubUnauthorized,
    format_github_time,
)
from apps.integrations.services.github_sync import SyncResult, repository_sync
from apps.integrations.services.sync_lease import LeaseLost, lease_acquire, lease_holder


class Command(OperatorCommand):
    help = (
        "Sync one tracked repository's pull requests now, in this process: incremental from "
        "the last sync, or full (90 days by default) the first time or with --full."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("full_name", metavar="OWNER/NAME")
        parser.add_argument("--team", metavar="SLUG", help="needed when two teams track it")
        parser.add_argument(
            "--full", action="store_true", help="ignore the watermark: list the whole window"
        )
        parser.add_argument(
            "--days-back", type=int, metavar="N", help="window of a full sync (default 90)"
        )
        parser.add_argument(
            "--all-history", action="store_true", help="full sync of every PR ever updated"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        days_back = options["days_back"]
        if days_back is not None and days_back < 1:
            self.fail("--days-back must be a positive number of days")
        if days_back is not None and options["all_history"]:
            self.fail("--days-back and --all-history exclude each other")
        tracked_repo = self._find(options["full_name"], options["team"])
        lease = lease_acquire(tracked_repo=tracked_repo)
        if lease is None:
            holder = lease_holder(tracked_repo=tracked_repo)
            until = format_github_time(holder.expires_at) if holder else "soon"
            self.fail(
                f"{tracked_repo.full_name} is being synced by another process "
                f"(its lease runs until {until}); try again later",
                code=EXIT_TEMPFAIL,
            )
        with lease:
            self._sync(tracked_repo, options, days_back, heartbeat=lease.renew)

    def _sync(self, tracked_repo, options, days_back, *, heartbeat) -> None:
        sync_outcome.repository_sync_started(tracked_repo=tracked_repo)
        partial = SyncResult(full_name=tracked_repo.full_name, kind="incremental")

        def progress(result: SyncResult) -> None:
            nonlocal partial
            partial = result
            self.progress(
                f"{result.full_name}: page {result.pages}, {result.prs_upserted} PRs upserted, "
                f"{result.requests_used} requests"
            )

        try:
            result = repository_sync(
                tracked_repo=tracked_repo,
                full=options["full"] or days_back is not None,
                days_back=days_back,
                all_history=options["all_history"],
                heartbeat=heartbeat,
                progress=progress,
            )
        except GitHubNotConnected as exc:
            sync_outcome.repository_sync_failed(tracked_repo=tracked_repo, message=str(exc))
            self.fail(str(exc))
        except GitHubRateLimited as exc:
            sync_outcome.repository_sync_error(tracked_repo=tracked_repo, error=exc)
            self.fail(
                f"{tracked_repo.full_name}: GitHub "
                f"{sync_outcome.rate_limited_message(exc.retry_at)}; "
                f"progress is saved ({partial.prs_upserted} PRs upserted this run), "
                "run sync_repo again after the reset",
                code=EXIT_TEMPFAIL,
            )
        except GitHubUnauthorized as exc:
            sync_outcome.repository_sync_error(tracked_repo=tracked_repo, error=exc)
            self.fail(f"{tracked_repo.full_name}: {sync_outcome.CREDENTIALS_REJECTED}")
        except GitHubTransientError as exc:
            sync_outcome.repository_sync_error(tracked_repo=tracked_repo, error=exc)
            self.fail(f"{tracked_repo.full_name}: {exc}; try again later", code=EXIT_TEMPFAIL)
        except GitHubError as exc:
            sync_outcome.repository_sync_error(tracked_repo=tracked_repo, error=exc)
            self.fail(f"{tracked_repo.full_name}: {exc}")
        except LeaseLost:
            self.fail(
                f"{tracked_repo.full_name}: another process took over the sync; progress is saved",
                code=EXIT_TEMPFAIL,
            )
        except KeyboardInterrupt:
            sync_outcome.repository_sync_failed(
                tracked_repo=tracked_repo,
                message="interrupted; the next sync resumes from its checkpoint",
            )
            self.fail("interrupted; progress is saved", code=130)

        sync_outcome.repository_sync_succeeded(tracked_repo=tracked_repo)
        self.stdout.write(result.summary())

    def _find(self, full_name: str, team: str | None) -> TrackedRepository:
        matches = TrackedRepository.objects.select_related("team", "integration").named(full_name)
        if team:
            matches = matches.filter(team__slug=team)
        found = list(matches[:10])
        if not found:
            where = f" for team {team}" if team else ""
            self.fail(
                f"{full_name} is not tracked{where}; track it first: "
                f"manage.py track_repo {full_name} --team SLUG"
            )
        if len(found) > 1:
            teams = ", ".join(sorted(r.team.slug for r in found))
            self.fail(f"{full_name} is tracked by several teams ({teams}); pass --team SLUG")
        return found[0]
