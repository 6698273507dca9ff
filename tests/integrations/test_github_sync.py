"""The sync engine against the GitHub emulator, over real HTTP."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.integrations.models import PullRequest, TrackedRepository
from apps.integrations.services.github_client import (
    GitHubPrimaryRateLimit,
    GitHubTransientError,
)
from apps.integrations.services.github_sync import repository_sync
from tests import builders

pytestmark = pytest.mark.django_db

REPO = "acme/widgets"


def sync(repo: TrackedRepository, **kwargs):
    repo.refresh_from_db()
    return repository_sync(tracked_repo=repo, **kwargs)


def listing_requests(emulator):
    return [r for r in emulator.requests if r.path.endswith("/issues")]


def detail_requests(emulator):
    return [r for r in emulator.requests if builders.is_detail_request(r)]


detail_fetches = builders.detail_fetches


@pytest.fixture(autouse=True, params=["graphql", "rest"])
def pr_details(request, settings):
    """Every sync test runs with both ways of fetching PR details."""
    settings.GITHUB_PR_DETAILS = request.param
    return request.param


def assert_matches_github(emulator, repo: TrackedRepository) -> None:
    """Every PR in the database equals GitHub's current record, field by field."""
    for row in PullRequest.objects.for_team(repo.team).filter(tracked_repo=repo):
        github = emulator.get(REPO, row.number)
        assert row.github_id == github.id
        assert row.title == github.title
        assert row.github_updated_at == github.updated_at, row.number
        assert row.state == ("open" if github.state == "open" else "closed")
        assert row.merged_at == github.merged_at


# -- full sync -------------------------------------------------------------------------------


def test_full_sync_stores_exactly_the_prs_updated_in_the_window(emulator, days_ago):
    old = emulator.add_pull(REPO, created_at=days_ago(200), updated_at=days_ago(91))
    inside = [
        emulator.add_pull(REPO, created_at=days_ago(200), updated_at=days_ago(89)),
        emulator.add_pull(REPO, created_at=days_ago(30), updated_at=days_ago(10)),
        emulator.add_pull(REPO, created_at=days_ago(1), updated_at=days_ago(0.5)),
    ]
    emulator.add_issue(REPO, created_at=days_ago(5), updated_at=days_ago(5))
    repo = builders.tracked_repo(emulator, REPO)

    result = sync(repo)

    stored = set(PullRequest.objects.filter(tracked_repo=repo).values_list("number", flat=True))
    assert stored == {pr.number for pr in inside}
    assert old.number not in stored
    assert result.complete and result.kind == "full"
    assert result.prs_upserted == 3
    assert_matches_github(emulator, repo)


def test_full_sync_stores_every_detail_field(emulator, days_ago):
    pr = emulator.add_pull(
        REPO,
        title="Add widgets",
        author=None,
        created_at=days_ago(3),
        updated_at=days_ago(1),
        merged_at=days_ago(1),
        draft=False,
        additions=120,
        deletions=7,
        changed_files=4,
        commits=3,
        base_ref="main",
        head_ref="feature/widgets",
    )
    draft = emulator.add_pull(REPO, author="alice", draft=True, updated_at=days_ago(2))
    repo = builders.tracked_repo(emulator, REPO)

    sync(repo)

    row = PullRequest.objects.get(tracked_repo=repo, number=pr.number)
    assert (row.github_id, row.title, row.state) == (pr.id, "Add widgets", "closed")
    assert row.author_login == "ghost"
    assert (row.additions, row.deletions, row.changed_files, row.commits) == (120, 7, 4, 3)
    assert (row.base_ref, row.head_ref) == ("main", "feature/widgets")
    assert row.github_created_at == days_ago(3)
    assert row.merged_at == days_ago(1) and row.closed_at == days_ago(1)
    assert row.html_url.endswith(f"/{REPO}/pull/{pr.number}")
    assert row.team_id == repo.team_id
    draft_row = PullRequest.objects.get(tracked_repo=repo, number=draft.number)
    assert draft_row.is_draft and draft_row.state == "open" and draft_row.author_login == "alice"


def test_full_sync_with_all_history_includes_prs_older_than_the_window(emulator, days_ago):
    emulator.add_pull(REPO, created_at=days_ago(900), updated_at=days_ago(800))
    emulator.add_pull(REPO, updated_at=days_ago(1))
    repo = builders.tracked_repo(emulator, REPO)

    sync(repo, all_history=True)

    assert PullRequest.objects.filter(tracked_repo=repo).count() == 2


def test_full_sync_honours_days_back(emulator, days_ago):
    emulator.add_pull(REPO, updated_at=days_ago(20))
    emulator.add_pull(REPO, updated_at=days_ago(5))
    repo = builders.tracked_repo(emulator, REPO)

    sync(repo, days_back=7)

    assert PullRequest.objects.filter(tracked_repo=repo).count() == 1


def test_sync_of_an_empty_repository_completes_and_sets_a_watermark(emulator):
    repo = builders.tracked_repo(emulator, REPO)

    result = sync(repo)

    repo.refresh_from_db()
    assert result.complete and result.pages == 1
    assert repo.sync_watermark is not None and repo.sync_checkpoint is None


def test_plain_issues_cost_no_extra_requests(emulator, days_ago):
    emulator.generate_issues(REPO, 150, start=days_ago(10), step=timedelta(minutes=1))
    emulator.generate_pulls(REPO, 10, start=days_ago(5), step=timedelta(minutes=1))
    repo = builders.tracked_repo(emulator, REPO)

    result = sync(repo)

    assert len(detail_fetches(emulator)) == 10
    assert result.requests_used == len(listing_requests(emulator)) + len(detail_requests(emulator))
    assert result.items_skipped >= 150


# -- incremental sync ------------------------------------------------------------------------


def test_incremental_sync_fetches_details_only_for_what_changed(emulator, days_ago):
    prs = emulator.generate_pulls(REPO, 40, start=days_ago(20), step=timedelta(hours=1))
    repo = builders.tracked_repo(emulator, REPO)
    sync(repo)
    emulator.clear_requests()
    emulator.update(REPO, prs[3].number, title="Renamed")
    emulator.update(REPO, prs[17].number, state="closed")
    new = emulator.add_pull(REPO, title="Brand new")

    result = sync(repo)

    fetched = set(detail_fetches(emulator))
    assert fetched == {prs[3].number, prs[17].number, new.number}
    assert result.kind == "incremental" and result.prs_upserted == 3
    assert PullRequest.objects.get(tracked_repo=repo, number=prs[3].number).title == "Renamed"
    assert_matches_github(emulator, repo)


def test_incremental_sync_with_nothing_changed_makes_one_request(emulator, days_ago):
    emulator.generate_pulls(REPO, 30, start=days_ago(3), step=timedelta(minutes=7))
    repo = builders.tracked_repo(emulator, REPO)
    sync(repo)
    emulator.clear_requests()

    result = sync(repo)

    assert result.requests_used == 1 and len(emulator.requests) == 1
    assert result.prs_upserted == 0 and result.complete


def test_incremental_since_is_githubs_newest_updated_at_in_utc(emulator, days_ago):
    prs = emulator.generate_pulls(REPO, 5, start=days_ago(3), step=timedelta(minutes=7))
    repo = builders.tracked_repo(emulator, REPO)
    sync(repo)
    emulator.clear_requests()

    sync(repo)

    newest = max(pr.updated_at for pr in prs)
    assert listing_requests(emulator)[0].query["since"] == newest.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_since_is_sent_in_utc_whatever_the_offset_of_the_stored_watermark(emulator, days_ago):
    repo = builders.tracked_repo(emulator, REPO)
    plus_five = timezone(timedelta(hours=5))
    TrackedRepository.objects.filter(pk=repo.pk).update(
        sync_watermark=datetime(2026, 3, 1, 17, 30, tzinfo=plus_five)
    )

    sync(repo)

    assert listing_requests(emulator)[0].query["since"] == "2026-03-01T12:30:00Z"


def test_sync_asks_github_even_right_after_a_sync(emulator, days_ago):
    emulator.add_pull(REPO, updated_at=days_ago(1))
    repo = builders.tracked_repo(emulator, REPO)
    sync(repo)
    emulator.clear_requests()

    sync(repo)
    sync(repo)

    assert len(listing_requests(emulator)) == 2


# -- 1. nothing missed -----------------------------------------------------------------------


def _on_listing(emulator, nth: int, action):
    """Run ``action`` once, when the ``nth`` listing request (1-based) arrives."""
    seen = {"n": 0}

    def hook(req):
        if req.path.endswith("/issues"):
            seen["n"] += 1
            if seen["n"] == nth:
                action()

    emulator.add_hook(hook)


def test_pr_updated_during_sync_is_not_lost(emulator, days_ago):
    prs = emulator.generate_pulls(REPO, 250, start=days_ago(30), step=timedelta(minutes=10))
    repo = builders.tracked_repo(emulator, REPO)
    _on_listing(emulator, 2, lambda: emulator.update(REPO, prs[5].number, title="Edited mid-sync"))

    sync(repo)
    sync(repo)

    row = PullRequest.objects.get(tracked_repo=repo, number=prs[5].number)
    assert row.title == "Edited mid-sync"
    assert PullRequest.objects.filter(tracked_repo=repo).count() == 250
    assert_matches_github(emulator, repo)


def test_update_while_paging_does_not_skip_the_records_behind_it(emulator, days_ago):
    # An edit to a record already listed moves it to the end of the ascending listing and
    # shifts every later record one place forward: a sync that asked for "page 2" next would
    # never see the record that slid from page 2 onto page 1.
    prs = emulator.generate_pulls(REPO, 300, start=days_ago(30), step=timedelta(minutes=10))
    repo = builders.tracked_repo(emulator, REPO)
    _on_listing(emulator, 2, lambda: emulator.update(REPO, prs[0].number, title="Moved"))

    sync(repo)

    assert PullRequest.objects.filter(tracked_repo=repo).count() == 300
    assert_matches_github(emulator, repo)


def test_pr_updated_after_a_sync_in_the_same_second_is_picked_up_next_time(emulator, days_ago):
    prs = emulator.generate_pulls(REPO, 3, start=days_ago(1), step=timedelta(minutes=1))
    repo = builders.tracked_repo(emulator, REPO)
    sync(repo)
    repo.refresh_from_db()
    # Same second as the watermark: only an inclusive `since` sees it.
    emulator.update(REPO, prs[0].number, updated_at=repo.sync_watermark, title="Same second")

    sync(repo)

    assert PullRequest.objects.get(tracked_repo=repo, number=prs[0].number).title == "Same second"


def test_watermark_comes_from_github_timestamps_not_our_clock(emulator, days_ago):
    # The emulator's clock runs a day behind ours: a watermark taken from our clock after
    # fetching would be in GitHub's future and skip the next day's edits.
    emulator.advance(-86_400)
    prs = emulator.generate_pulls(REPO, 3, start=days_ago(3), step=timedelta(hours=1))
    repo = builders.tracked_repo(emulator, REPO)
    sync(repo)
    emulator.update(REPO, prs[1].number, title="Edited later")

    sync(repo)

    repo.refresh_from_db()
    assert repo.sync_watermark == emulator.get(REPO, prs[1].number).updated_at
    assert PullRequest.objects.get(tracked_repo=repo, number=prs[1].number).title == "Edited later"


# -- 2. bulk edits ---------------------------------------------------------------------------


def test_bulk_edit_sharing_one_second_neither_loops_nor_skips(emulator, days_ago):
    emulator.generate_pulls(REPO, 20, start=days_ago(9), step=timedelta(minutes=1))
    same_second = days_ago(8)
    emulator.generate_pulls(
        REPO, 350, start=days_ago(10), step=timedelta(0), updated_at=same_second
    )
    emulator.generate_pulls(REPO, 20, start=days_ago(7), step=timedelta(minutes=1))
    repo = builders.tracked_repo(emulator, REPO)

    result = sync(repo)

    assert result.complete
    assert PullRequest.objects.filter(tracked_repo=repo).count() == 390
    assert len(listing_requests(emulator)) <= 12
    assert len(detail_fetches(emulator)) == 390


def test_bulk_edit_after_a_sync_is_fully_picked_up(emulator, days_ago):
    prs = emulator.generate_pulls(REPO, 320, start=days_ago(20), step=timedelta(minutes=5))
    repo = builders.tracked_repo(emulator, REPO)
    sync(repo)
    label_time = emulator.now()
    for pr in prs:
        emulator.update(REPO, pr.number, updated_at=label_time, title=f"{pr.title} [labelled]")

    sync(repo)
    emulator.clear_requests()
    idle = sync(repo)

    assert (
        PullRequest.objects.filter(tracked_repo=repo, title__endswith="[labelled]").count() == 320
    )
    assert idle.details_fetched == 0 and idle.prs_upserted == 0


def test_edit_during_a_bulk_edit_stretch_does_not_skip_records(emulator, days_ago):
    same_second = days_ago(8)
    prs = emulator.generate_pulls(
        REPO, 350, start=days_ago(10), step=timedelta(seconds=1), updated_at=same_second
    )
    repo = builders.tracked_repo(emulator, REPO)
    _on_listing(emulator, 3, lambda: emulator.update(REPO, prs[10].number, title="Moved"))

    sync(repo)
    sync(repo)

    assert PullRequest.objects.filter(tracked_repo=repo).count() == 350
    assert_matches_github(emulator, repo)


# -- 3. resumable ----------------------------------------------------------------------------


def test_rate_limit_mid_sync_keeps_progress_and_resumes_without_redoing_work(
    emulator, days_ago, pr_details
):
    for name in (REPO, "acme/control"):
        emulator.generate_pulls(name, 450, start=days_ago(40), step=timedelta(minutes=30))
    control = builders.tracked_repo(emulator, "acme/control")
    sync(control)
    uninterrupted_listings = len(listing_requests(emulator))
    emulator.clear_requests()
    repo = builders.tracked_repo(emulator, REPO)
    reset_at = emulator.now() + timedelta(minutes=20)
    if pr_details == "rest":  # runs out among page 3's detail requests
        emulator.set_rate_limit(builders.TOKEN, remaining=250, reset_at=reset_at)
    else:  # the third GraphQL query (page 3's details) is refused
        emulator.set_graphql_rate_limit(builders.TOKEN, remaining=2, reset_at=reset_at)

    with pytest.raises(GitHubPrimaryRateLimit) as raised:
        sync(repo)

    assert raised.value.reset_at == reset_at
    repo.refresh_from_db()
    assert 199 <= PullRequest.objects.filter(tracked_repo=repo).count() < 450  # 2+ pages
    assert repo.sync_checkpoint is not None and repo.sync_watermark is None

    emulator.set_rate_limit(builders.TOKEN, remaining=5000)
    emulator.set_graphql_rate_limit(builders.TOKEN, remaining=5000)
    result = sync(repo)

    assert result.resumed and result.complete
    assert PullRequest.objects.filter(tracked_repo=repo).count() == 450
    # No PR's details were fetched twice, and at most one page was listed again.
    fetched = detail_fetches(emulator)
    assert len(fetched) == len(set(fetched)) == 450
    assert len(listing_requests(emulator)) <= uninterrupted_listings + 1


def test_failure_mid_sync_resumes_from_the_checkpoint(emulator, days_ago):
    emulator.generate_pulls(REPO, 350, start=days_ago(40), step=timedelta(minutes=30))
    repo = builders.tracked_repo(emulator, REPO)
    _on_listing(emulator, 3, lambda: emulator.fail_next(status=502, path_contains="/issues"))

    with pytest.raises(GitHubTransientError):
        sync(repo)
    repo.refresh_from_db()
    checkpoint = repo.sync_checkpoint
    stored = PullRequest.objects.filter(tracked_repo=repo).count()
    emulator.clear_requests()
    result = sync(repo)

    assert checkpoint is not None and stored >= 100 and result.resumed
    assert listing_requests(emulator)[0].query["since"] == checkpoint["since"].replace(
        "+00:00", "Z"
    )
    assert len(detail_fetches(emulator)) == 350 - stored
    assert PullRequest.objects.filter(tracked_repo=repo).count() == 350


def test_watermark_does_not_move_until_a_pass_has_stored_everything(emulator, days_ago):
    emulator.generate_pulls(REPO, 250, start=days_ago(40), step=timedelta(minutes=30))
    repo = builders.tracked_repo(emulator, REPO)
    sync(repo)
    repo.refresh_from_db()
    watermark = repo.sync_watermark
    for pr in emulator.items(REPO)[:150]:
        emulator.update(REPO, pr.number, title="second pass")
    emulator.clear_requests()
    _on_listing(emulator, 2, lambda: emulator.fail_next(status=500, path_contains="/issues"))

    with pytest.raises(GitHubTransientError):
        sync(repo)

    repo.refresh_from_db()
    assert repo.sync_watermark == watermark
    assert repo.sync_checkpoint is not None


def test_bounded_sync_stops_after_max_pages_and_the_next_call_continues(emulator, days_ago):
    emulator.generate_pulls(REPO, 250, start=days_ago(40), step=timedelta(minutes=30))
    repo = builders.tracked_repo(emulator, REPO)

    first = sync(repo, max_pages=1)
    second = sync(repo)

    assert not first.complete and first.pages == 1
    assert second.complete and second.resumed
    assert PullRequest.objects.filter(tracked_repo=repo).count() == 250


# -- 4. idempotent and ordered ---------------------------------------------------------------


def test_running_a_full_sync_twice_creates_and_changes_nothing(emulator, days_ago):
    emulator.generate_pulls(REPO, 120, start=days_ago(40), step=timedelta(hours=2))
    repo = builders.tracked_repo(emulator, REPO)
    sync(repo)
    before = list(PullRequest.objects.order_by("pk").values_list("pk", "updated_at"))

    result = sync(repo, full=True)

    assert result.prs_upserted == 0 and result.details_fetched == 0
    assert list(PullRequest.objects.order_by("pk").values_list("pk", "updated_at")) == before


# -- 6. streaming, batched writes ------------------------------------------------------------


def test_each_page_is_written_with_one_batched_statement(emulator, days_ago):
    emulator.generate_pulls(REPO, 300, start=days_ago(40), step=timedelta(minutes=30))
    repo = builders.tracked_repo(emulator, REPO)

    with CaptureQueriesContext(connection) as queries:
        result = sync(repo)

    inserts = [q for q in queries.captured_queries if q["sql"].startswith("INSERT")]
    # 100 + 99 + 99 + 2 new PRs (each later page repeats one), then the page at the last
    # updated_at that ends the pass (and whose ETag the next sync sends): nothing to write.
    assert result.pages == 5
    assert len(inserts) == result.pages - 1
    assert len(queries.captured_queries) < 10 * result.pages


# -- 7. deep pages ---------------------------------------------------------------------------


def test_a_repository_larger_than_the_deep_page_limit_syncs_completely(emulator, days_ago):
    emulator.generate_issues(REPO, 10_050, start=days_ago(80), step=timedelta(seconds=30))
    emulator.generate_pulls(REPO, 60, start=days_ago(2), step=timedelta(minutes=1))
    repo = builders.tracked_repo(emulator, REPO)

    result = sync(repo)

    assert result.complete
    assert PullRequest.objects.filter(tracked_repo=repo).count() == 60
    assert emulator.count_requests(status=422) == 0
    assert max(int(r.query.get("page", 1)) for r in listing_requests(emulator)) == 1


def test_bulk_edit_followed_by_more_than_the_deep_page_limit_still_syncs(emulator, days_ago):
    same_second = days_ago(60)
    emulator.generate_pulls(
        REPO, 150, start=days_ago(70), step=timedelta(seconds=1), updated_at=same_second
    )
    emulator.generate_issues(REPO, 9_950, start=days_ago(59), step=timedelta(seconds=30))
    emulator.generate_pulls(REPO, 10, start=days_ago(1), step=timedelta(minutes=1))
    repo = builders.tracked_repo(emulator, REPO)

    result = sync(repo)

    assert result.complete
    assert emulator.count_requests(status=422) == 1
    assert PullRequest.objects.filter(tracked_repo=repo).count() == 160


def test_stored_timestamps_are_utc(emulator, days_ago):
    emulator.add_pull(REPO, updated_at=datetime(2026, 11, 1, 23, 30, tzinfo=UTC))
    repo = builders.tracked_repo(emulator, REPO)

    sync(repo, all_history=True)

    row = PullRequest.objects.get(tracked_repo=repo)
    assert row.github_updated_at == datetime(2026, 11, 1, 23, 30, tzinfo=UTC)
    assert row.github_updated_at.utcoffset() == timedelta(0)


# -- conditional requests --------------------------------------------------------------------


def test_idle_incremental_sync_is_a_free_304(emulator, days_ago):
    emulator.generate_pulls(REPO, 30, start=days_ago(3), step=timedelta(minutes=7))
    repo = builders.tracked_repo(emulator, REPO)
    sync(repo)
    emulator.clear_requests()

    result = sync(repo)

    (request,) = emulator.requests
    assert request.status == 304 and request.headers.get("if-none-match")
    assert result.complete and result.requests_used == 1 and result.prs_upserted == 0


def test_change_after_an_idle_304_is_still_picked_up(emulator, days_ago):
    prs = emulator.generate_pulls(REPO, 30, start=days_ago(3), step=timedelta(minutes=7))
    repo = builders.tracked_repo(emulator, REPO)
    sync(repo)
    sync(repo)  # 304
    emulator.update(REPO, prs[4].number, title="Changed after the 304")

    result = sync(repo)

    assert result.prs_upserted == 1
    assert PullRequest.objects.get(tracked_repo=repo, number=prs[4].number).title == (
        "Changed after the 304"
    )
    sync(repo)
    assert emulator.requests[-1].status == 304


def test_full_page_at_the_watermark_keeps_no_etag(emulator, days_ago):
    # A page of 100 at the watermark does not show the whole listing: a change behind it
    # would not change that page, so its ETag must not be trusted.
    emulator.generate_pulls(
        REPO, 150, start=days_ago(5), step=timedelta(seconds=1), updated_at=days_ago(1)
    )
    repo = builders.tracked_repo(emulator, REPO)
    sync(repo)
    repo.refresh_from_db()
    emulator.update(REPO, 140, title="Behind the first page")

    sync(repo)

    assert repo.sync_listing_etag == ""
    assert PullRequest.objects.get(tracked_repo=repo, number=140).title == "Behind the first page"


def test_full_sync_retried_by_the_same_request_resumes_its_pass(emulator, days_ago):
    emulator.generate_pulls(REPO, 350, start=days_ago(40), step=timedelta(minutes=30))
    repo = builders.tracked_repo(emulator, REPO)
    _on_listing(emulator, 3, lambda: emulator.fail_next(status=502, path_contains="/issues"))
    with pytest.raises(GitHubTransientError):
        sync(repo, full=True, request_id="message-1")
    emulator.clear_requests()

    retried = sync(repo, full=True, request_id="message-1")

    assert retried.resumed and retried.complete
    assert len(detail_fetches(emulator)) == 350 - 199  # pages 1 and 2 were not redone


def test_full_sync_asked_by_a_new_request_starts_over(emulator, days_ago):
    emulator.generate_pulls(REPO, 350, start=days_ago(40), step=timedelta(minutes=30))
    repo = builders.tracked_repo(emulator, REPO)
    sync(repo, max_pages=2, request_id="message-1")

    again = sync(repo, full=True, request_id="message-2")

    assert again.kind == "full" and not again.resumed and again.complete
