"""Comparing the pull requests we store with the GitHub emulator's truth: the check that
ends the fault tests (``tests.builders.assert_matches_github``) and every load-benchmark round.

Needs Django set up (it reads ``PullRequest`` rows).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class PullRequestDifferences:
    """PR numbers of one repository: on GitHub but not stored, stored with other data, and
    stored but not on GitHub."""

    missing: list[int]
    stale: list[int]
    extra: list[int]

    def __bool__(self) -> bool:
        return bool(self.missing or self.stale or self.extra)


def pull_request_differences(
    emulator, repo, *, since: datetime | None = None
) -> PullRequestDifferences:
    """How the stored PRs of ``repo`` (a ``TrackedRepository``) differ from the emulator's PRs
    updated at or after ``since`` (default: all of them)."""
    from apps.integrations.models import PullRequest

    truth = {
        item.number: item
        for item in emulator.items(repo.full_name)
        if item.kind == "pull" and (since is None or item.updated_at >= since)
    }
    rows = {row.number: row for row in PullRequest.objects.filter(tracked_repo=repo)}
    stale = sorted(
        number
        for number, row in rows.items()
        if number in truth
        and (
            row.github_updated_at != truth[number].updated_at
            or row.title != truth[number].title
            or row.github_id != truth[number].id
        )
    )
    return PullRequestDifferences(
        missing=sorted(set(truth) - set(rows)), stale=stale, extra=sorted(set(rows) - set(truth))
    )
