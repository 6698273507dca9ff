"""The batched upsert: ordering is enforced by the write itself."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from apps.integrations.models import PullRequest
from apps.integrations.services.github_sync import repository_sync
from apps.integrations.services.pull_requests import PullRequestData, pull_requests_upsert
from tests import builders

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 10, 1, 12, 0, tzinfo=UTC)


def pr_data(number: int = 1, *, updated_at: datetime = T0, title: str = "First") -> PullRequestData:
    return PullRequestData(
        github_id=1000 + number,
        number=number,
        title=title,
        state="open",
        is_draft=False,
        author_login="alice",
        github_created_at=T0 - timedelta(days=1),
        github_updated_at=updated_at,
        closed_at=None,
        merged_at=None,
        additions=1,
        deletions=1,
        changed_files=1,
        commits=1,
        base_ref="main",
        head_ref="topic",
        html_url=f"https://github.com/acme/widgets/pull/{number}",
    )


@pytest.fixture
def repo(emulator):
    return builders.tracked_repo(emulator, "acme/widgets")


def test_upsert_never_replaces_a_newer_row_with_older_data(repo):
    newer = pr_data(updated_at=T0 + timedelta(minutes=5), title="Newer")
    pull_requests_upsert(tracked_repo=repo, pull_requests=[newer])

    written = pull_requests_upsert(
        tracked_repo=repo, pull_requests=[replace(newer, github_updated_at=T0, title="Older")]
    )

    row = PullRequest.objects.get(tracked_repo=repo)
    assert written == 0
    assert (row.title, row.github_updated_at) == ("Newer", T0 + timedelta(minutes=5))


def test_upsert_applies_newer_data_to_an_existing_row(repo):
    pull_requests_upsert(tracked_repo=repo, pull_requests=[pr_data()])

    written = pull_requests_upsert(
        tracked_repo=repo,
        pull_requests=[pr_data(updated_at=T0 + timedelta(seconds=1), title="Edited")],
    )

    assert written == 1
    assert PullRequest.objects.get(tracked_repo=repo).title == "Edited"
    assert PullRequest.objects.count() == 1


def test_upsert_writes_large_batches_across_several_statements(repo):
    rows = [pr_data(n) for n in range(1, 1_201)]

    written = pull_requests_upsert(tracked_repo=repo, pull_requests=iter(rows))

    assert written == 1_200 and PullRequest.objects.filter(tracked_repo=repo).count() == 1_200
    assert set(PullRequest.objects.values_list("team_id", flat=True)) == {repo.team_id}


def test_two_teams_tracking_one_repository_keep_their_own_rows(emulator):
    emulator.add_pull("acme/widgets", updated_at=emulator.now() - timedelta(days=1))
    first = builders.tracked_repo(emulator, "acme/widgets", team_slug="acme")
    second = builders.tracked_repo(emulator, "acme/widgets", team_slug="globex")

    repository_sync(tracked_repo=first)
    repository_sync(tracked_repo=second)

    assert PullRequest.objects.for_team(first.team).count() == 1
    assert PullRequest.objects.for_team(second.team).count() == 1
    assert PullRequest.objects.count() == 2
