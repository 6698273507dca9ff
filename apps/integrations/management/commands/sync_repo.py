from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from apps.integrations.management.commands._base import EXIT_TEMPFAIL, OperatorCommand
from apps.integrations.models import TrackedRepository
from apps.integrations.services import rate_limits, sync_outcome
from apps.integrations.services.github_client import (
    GitHubError,
    GitHubNotConnected,
    GitHubRateLimited,
    GitHubTransientError,
    GitHubUnauthorized,
    format_github_time,
)
from apps.integrations.services.github_sync import SyncResult
from apps.integrations.services.sync_jobs import repository_sync_job, syncable_repository


class Command(OperatorCommand):
    help = (
        "Sync one tracked repository's pull requests now, in this process: incremental from "
        "the last sync, or full (90 days by default) the first time or with --full. With "
        "--enqueue, send the sync to the workers instead, ahead of bulk syncs."
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
        parser.add_argument(
            "--enqueue",
            action="store_true",
            help="send an interactive sync to the workers (ahead of bulk syncs) and return",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        days_back = options["days_back"]
        if days_back is not None and days_back < 1:
            self.fail("--days-back must be a positive number of days")
        if days_back is not None and options["all_history"]:
            self.fail("--days-back and --all-history exclude each other")
        if options["enqueue"] and (days_back is not None or options["all_history"]):
            self.fail("--enqueue takes --full only (not --days-back or --all-history)")
        full_name = options["full_name"]
        tracked_repo = self.find_tracked_repository(
            full_name,
            options["team"],
            hint=f"; track it first: manage.py track_repo {full_name} --team SLUG",
        )
        if options["enqueue"]:
            self._enqueue(tracked_repo, full=options["full"])
            return
        name = tracked_repo.full_name
        partial = SyncResult(full_name=name, kind="incremental")

        def progress(result: SyncResult) -> None:
            nonlocal partial
            partial = result
            self.progress(
                f"{name}: page {result.pages}, {result.prs_upserted} PRs upserted, "
                f"{result.requests_used} requests"
            )

        try:
            outcome = repository_sync_job(
                tracked_repo_id=tracked_repo.pk,
                requested_at=None,
                time_budget=None,
                # An operator runs this: it may spend the reserve bulk syncs leave.
                interactive=True,
                full=options["full"] or days_back is not None,
                days_back=days_back,
                all_history=options["all_history"],
                progress=progress,
            )
        except GitHubError as error:
            # No retries here: the operator runs the command again, so every error is final.
            sync_outcome.repository_sync_error(tracked_repo=tracked_repo, error=error)
            message, code = self._explain(error, partial)
            self.fail(f"{name}: {message}", code=code)
        except KeyboardInterrupt:
            # Nothing was written after the interruption; the last committed page's checkpoint
            # is where the next run resumes.
            self.fail("interrupted; progress is saved", code=130)

        if outcome.action == "skipped":
            self.fail(f"{name}: {self._not_syncable(tracked_repo, outcome.reason)}")
        if outcome.action == "lease_lost":
            self.fail(
                f"{name}: another process took over the sync; progress is saved", code=EXIT_TEMPFAIL
            )
        if outcome.action != "synced":
            until = format_github_time(outcome.wait_until) if outcome.wait_until else "soon"
            self.fail(
                f"{name} is being synced by another process "
                f"(its lease runs until {until}); try again later",
                code=EXIT_TEMPFAIL,
            )
        assert outcome.result is not None
        self.stdout.write(outcome.result.summary())

    def _enqueue(self, tracked_repo: TrackedRepository, *, full: bool) -> None:
        """Send one interactive sync of ``tracked_repo`` through the task queue."""
        from apps.integrations.tasks import EnqueueFailed, enqueue_repository_syncs

        name = tracked_repo.full_name
        try:
            sent = enqueue_repository_syncs(
                tracked_repo_ids=[tracked_repo.pk], full=full, interactive=True
            )
        except EnqueueFailed as failure:
            cause = type(failure.__cause__).__name__
            self.fail(f"cannot reach the task queue at REDIS_URL: {cause}; nothing was queued")
        if not sent:
            _, reason = syncable_repository(tracked_repo.pk)
            self.fail(f"{name}: {self._not_syncable(tracked_repo, reason)}")
        kind = "a full resync" if full else "a sync"
        self.stdout.write(f"Queued {kind} of {name} ahead of bulk syncs; a worker runs it.")

    @staticmethod
    def _explain(error: GitHubError, partial: SyncResult) -> tuple[str, int]:
        """The error line (after the repository's name) and the exit code for ``error``."""
        if isinstance(error, GitHubRateLimited):
            until = sync_outcome.rate_limited_message(rate_limits.earliest_retry(error))
            return (
                f"GitHub {until}; progress is saved ({partial.prs_upserted} PRs upserted this "
                "run), run sync_repo again after the reset",
                EXIT_TEMPFAIL,
            )
        if isinstance(error, GitHubUnauthorized):
            return sync_outcome.CREDENTIALS_REJECTED, 1
        if isinstance(error, GitHubTransientError):
            return f"{error}; try again later", EXIT_TEMPFAIL
        return str(error), 1

    @staticmethod
    def _not_syncable(tracked_repo: TrackedRepository, reason: str) -> str:
        if reason == "inactive":
            return "the repository is inactive (untracked); reactivate it in the admin to sync it"
        return str(GitHubNotConnected.for_team(tracked_repo.team.slug))
