from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.core.management.base import CommandParser
from django.utils import timezone

from apps.integrations.management.commands._base import OperatorCommand
from apps.integrations.models import TrackedRepository
from apps.teams.models import Team

# The daily fan-out runs at 03:00: just before it, a healthy repository is ~24 h behind.
# Two more hours cover the fan-out draining and a failing sync's retries (5, backoff capped
# at 10 min) before a repository counts as stale.
DEFAULT_STALE_HOURS = 26.0
ERROR_WIDTH = 60
COLUMNS = ("team", "repository", "status", "last sync", "lag", "last error")


class Command(OperatorCommand):
    help = (
        "A table of tracked repositories: status, last successful sync, lag, last error. "
        "Exits 1 when any active repository shown is stale or in error (for cron or a health "
        "check), 0 otherwise."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--team", metavar="SLUG", help="only this team's repositories")
        # A string, checked in handle(): argparse's own error is a usage block, not one line.
        parser.add_argument(
            "--stale",
            metavar="HOURS",
            default=f"{DEFAULT_STALE_HOURS:g}",
            help=(
                "a repository is stale when its last successful sync (or, never synced, its "
                f"tracking) is older than this (default {DEFAULT_STALE_HOURS:g})"
            ),
        )

    def handle(self, *args: Any, **options: Any) -> None:
        stale_after = self._hours(options["stale"])
        repos = TrackedRepository.objects.select_related("team").order_by("team__slug", "full_name")
        if options["team"] is not None:
            team = Team.objects.filter(slug=options["team"]).first()
            if team is None:
                self.fail(f"no team {options['team']!r}")
            repos = repos.for_team(team)

        now = timezone.now()
        rows: list[tuple[str, ...]] = []
        stale = errors = 0
        for repo in repos:
            problem = _problem(repo, now=now, stale_after=stale_after)
            stale += problem == "stale"
            errors += problem == "error"
            rows.append(
                (
                    repo.team.slug,
                    repo.full_name,
                    repo.sync_status if repo.is_active else "inactive",
                    _when(repo.last_sync_at),
                    _lag(repo.last_sync_at, now) + (" (stale)" if problem == "stale" else ""),
                    _one_line(repo.last_sync_error or repo.inactive_reason),
                )
            )
        if not rows:
            self.stdout.write("no tracked repositories")
            return
        self.stdout.write(_table(rows))
        self.stdout.write(
            f"{len(rows)} repositories, {stale} stale (no successful sync for "
            f"{options['stale']} h), {errors} in error"
        )
        if stale or errors:
            raise SystemExit(1)

    def _hours(self, value: str) -> timedelta:
        try:
            hours = float(value)
        except ValueError:
            hours = -1.0
        if not 0 < hours < 1e6:
            self.fail(f"--stale must be a positive number of hours, not {value!r}")
        return timedelta(hours=hours)


def _problem(repo: TrackedRepository, *, now: datetime, stale_after: timedelta) -> str:
    """``error``, ``stale`` or "" for one repository; an inactive one is not meant to sync."""
    if not repo.is_active:
        return ""
    if repo.sync_status == TrackedRepository.SyncStatus.ERROR:
        return "error"
    synced_or_tracked = repo.last_sync_at or repo.created_at
    return "stale" if now - synced_or_tracked > stale_after else ""


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else "never"


def _lag(last_sync_at: datetime | None, now: datetime) -> str:
    if last_sync_at is None:
        return "-"
    minutes = max(int((now - last_sync_at).total_seconds() // 60), 0)
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    if days:
        return f"{days}d {hours}h"
    return f"{hours}h {minutes}m" if hours else f"{minutes}m"


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= ERROR_WIDTH else text[: ERROR_WIDTH - 1] + "…"


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in [COLUMNS, *rows]) for i in range(len(COLUMNS))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [COLUMNS, *rows]
    ]
    return "\n".join(lines)
