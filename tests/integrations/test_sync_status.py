"""manage.py sync_status: the table, and the exit code cron or a health check acts on."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.integrations.models import TrackedRepository
from tests import builders

pytestmark = pytest.mark.django_db


def run(*args: str) -> tuple[int, str, str]:
    return builders.run_command("sync_status", *args)


def repos(slug: str, count: int = 2, *, synced_ago: timedelta = timedelta(hours=1)):
    integration = builders.connected_team(slug, repos=count)
    rows = integration.repositories.order_by("pk")
    rows.update(last_sync_at=timezone.now() - synced_ago)
    return list(rows)


def test_all_recently_synced_exits_0_with_a_row_per_repository():
    repos("acme")

    code, out, err = run()

    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].split() == "team repository status last sync lag last error".split()
    assert [line.split()[:3] for line in lines[1:3]] == [
        ["acme", "acme/repo-0", "idle"],
        ["acme", "acme/repo-1", "idle"],
    ]
    assert "1h 0m" in lines[1]


def test_a_repository_in_error_exits_1_and_shows_its_error_on_one_line():
    first, _ = repos("acme")
    TrackedRepository.objects.filter(pk=first.pk).update(
        sync_status="error", last_sync_error="GitHub answered 404:\nNot Found"
    )

    code, out, _ = run()

    assert code == 1
    row = next(line for line in out.splitlines() if "acme/repo-0" in line)
    assert "error" in row and row.endswith("GitHub answered 404: Not Found")
    assert "1 in error" in out


def test_a_repository_not_synced_within_stale_hours_exits_1():
    repos("acme", count=1, synced_ago=timedelta(hours=27))

    code, out, _ = run()

    assert code == 1
    assert "(stale)" in out


def test_stale_hours_can_be_raised():
    repos("acme", count=1, synced_ago=timedelta(hours=27))

    assert run("--stale", "48")[0] == 0


def test_a_never_synced_repository_is_stale_once_tracked_longer_than_stale_hours():
    (repo,) = repos("acme", count=1)
    TrackedRepository.objects.filter(pk=repo.pk).update(
        last_sync_at=None, created_at=timezone.now() - timedelta(hours=30)
    )

    code, out, _ = run()

    assert code == 1
    row = next(line for line in out.splitlines() if "acme/repo-0" in line)
    assert "never" in row and row.endswith("(stale)")


def test_a_never_synced_repository_tracked_recently_is_not_stale():
    (repo,) = repos("acme", count=1)
    TrackedRepository.objects.filter(pk=repo.pk).update(last_sync_at=None)

    assert run()[0] == 0


def test_an_inactive_repository_is_neither_stale_nor_in_error():
    (repo,) = repos("acme", count=1, synced_ago=timedelta(days=30))
    TrackedRepository.objects.filter(pk=repo.pk).update(
        is_active=False, sync_status="error", inactive_reason="archived on GitHub"
    )

    code, out, _ = run()

    assert code == 0
    assert "inactive" in out and "archived on GitHub" in out


def test_team_shows_only_that_teams_repositories():
    repos("acme")
    (broken,) = repos("globex", count=1)
    TrackedRepository.objects.filter(pk=broken.pk).update(sync_status="error")

    code, out, _ = run("--team", "acme")

    assert code == 0
    assert "globex" not in out


def test_unknown_team_is_one_line_and_exit_1():
    repos("acme")

    code, out, err = run("--team", "nope")

    assert (code, out) == (1, "")
    assert err.splitlines() == ["error: no team 'nope'"]


@pytest.mark.parametrize("hours", ["0", "-3", "soon"])
def test_stale_must_be_a_positive_number_of_hours(hours):
    code, out, err = run("--stale", hours)

    assert (code, out) == (1, "")
    assert len(err.splitlines()) == 1 and "--stale" in err


def test_no_repositories_exits_0():
    assert run() == (0, "no tracked repositories\n", "")
