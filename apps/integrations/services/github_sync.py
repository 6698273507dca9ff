"""Pull-request sync: a full pass for a new repository, incremental passes after that.

How a pass lists changes, and why it cannot miss one
----------------------------------------------------
The Pulls API has no ``since``; the Issues API does (``updated at or after``, inclusive) and
lists pull requests among issues. A pass walks ``/issues?state=all&sort=updated&direction=asc``
from a lower bound ``since`` and stores each page before asking for the next.

GitHub pages by offset, and a record edited while we page jumps to the end of an ascending
listing, shifting every record behind it one place forward: asking for ``page=2`` after such
an edit silently skips a record. So a pass never asks for page 2 in that order. After each
page it moves ``since`` up to the last ``updated_at`` it stored and asks for page 1 again
(keyset pagination over ``since``). Records at exactly that second are listed again
(``since`` is inclusive); they are already stored with that ``updated_at``, so they cost no
detail request. A record edited meanwhile carries a newer ``updated_at`` and is listed
later in the same pass. Because every request is a first page, GitHub's deep-page limit
(422 past ~10,000 items) never applies, however large the repository.

One case defeats keyset paging: more records sharing one ``updated_at`` second than fit a
page (a label applied to hundreds of PRs at once). Moving ``since`` cannot get past them, so
for that stretch the pass lists ``sort=created`` from the same ``since``: the set of records
updated at or after ``since`` only grows while we page, and creation order does not change
when a record is edited, so offset pages are stable (new records append at the end). Edits
made during that stretch are caught by the next pass: before switching, the pass reads the
newest ``updated_at`` in the repository (the "ceiling") and adopts it as the watermark when
the stretch ends. Should even that stretch exceed GitHub's deep-page limit, the pass falls back
to offset pages in updated order for the tie group (the only place a concurrent edit could
still shift a record; noted in the README).

Cost
----
The changed PRs of a page get their detail fields from one GraphQL query (up to 100 aliases,
about one point); ``GITHUB_PR_DETAILS=rest`` fetches them one ``GET /pulls/N`` at a time. A
pass ends on a page that starts at its own last ``updated_at``, which is exactly the next
pass's first request: its ETag is kept with the watermark, and the next pass sends it as
``If-None-Match``. If nothing changed GitHub answers 304, free of rate limit. Only a page that
held the whole listing is trusted that way: behind a full page, an edit would not change it.

Watermark and checkpoint
------------------------
``sync_watermark`` is where the next pass starts. It is always a GitHub ``updated_at`` value,
never our clock: the original design's ``last_sync_at = now()`` after fetching loses every edit made
between the last listing request and ``now()``. ``sync_checkpoint`` is the position of an
unfinished pass, written in the same transaction as the page it follows, so a pass killed
anywhere (rate limit, exception, SIGKILL) resumes with at most one page listed again, and the
watermark only moves when a pass has stored everything below it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, NamedTuple

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.integrations.models import TrackedRepository
from apps.integrations.services.github_client import (
    GitHubClient,
    GitHubDeepPaginationError,
    GitHubNotFound,
    IssuesPage,
    client_for_integration,
    parse_github_time,
)
from apps.integrations.services.pull_requests import (
    PullRequestData,
    pull_requests_upsert,
    stored_updated_at,
)

logger = logging.getLogger(__name__)

PER_PAGE = 100
# "The whole history": GitHub launched in 2008; nothing on it was updated before.
BEGINNING_OF_GITHUB = datetime(2008, 1, 1, tzinfo=UTC)

SyncKind = Literal["full", "incremental"]
ListOrder = Literal["updated", "created"]


@dataclass
class Checkpoint:
    """Position of an unfinished pass, stored as JSON on the repository."""

    kind: SyncKind
    since: datetime
    page: int = 1
    order: ListOrder = "updated"
    # In "created" order: the watermark to adopt once the stretch is listed.
    ceiling: datetime | None = None
    # Offset pages in updated order are allowed (deep-page fallback inside a tie group).
    tie_offsets: bool = False
    # Id of the request (message) that started the pass: a retry of that same request
    # resumes the pass instead of starting it over.
    origin: str = ""

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["since"] = self.since.isoformat()
        data["ceiling"] = self.ceiling.isoformat() if self.ceiling else None
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Checkpoint:
        return cls(
            kind=data["kind"],
            since=datetime.fromisoformat(data["since"]),
            page=int(data.get("page", 1)),
            order=data.get("order", "updated"),
            ceiling=datetime.fromisoformat(data["ceiling"]) if data.get("ceiling") else None,
            tie_offsets=bool(data.get("tie_offsets", False)),
            origin=str(data.get("origin", "")),
        )


@dataclass
class SyncResult:
    full_name: str
    kind: SyncKind
    resumed: bool = False
    prs_upserted: int = 0
    items_skipped: int = 0
    details_fetched: int = 0
    requests_used: int = 0
    pages: int = 0
    duration: float = 0.0
    complete: bool = False
    watermark: datetime | None = None
    started: float = field(default_factory=time.monotonic, repr=False)

    def summary(self) -> str:
        state = "done" if self.complete else "paused (checkpoint saved)"
        return (
            f"{self.full_name}: {self.kind} sync {state}: {self.prs_upserted} PRs upserted, "
            f"{self.items_skipped} items skipped, {self.details_fetched} details fetched, "
            f"{self.requests_used} requests, {self.pages} pages, {self.duration:.1f}s"
        )


ProgressCallback = Callable[[SyncResult], None]


def repository_sync(
    *,
    tracked_repo: TrackedRepository,
    full: bool = False,
    days_back: int | None = None,
    all_history: bool = False,
    max_pages: int | None = None,
    time_budget: float | None = None,
    heartbeat: Callable[[], None] | None = None,
    progress: ProgressCallback | None = None,
    client: GitHubClient | None = None,
    request_id: str = "",
) -> SyncResult:
    """Bring ``tracked_repo``'s pull requests up to date with GitHub.

    Resumes an unfinished pass if there is one; otherwise runs an incremental pass from the
    watermark, or a full pass (``days_back`` days, default ``GITHUB_SYNC_DAYS_BACK``, or the
    whole history) when the repository has never completed one or ``full`` is asked.
    ``max_pages`` and ``time_budget`` (seconds) bound the work: past either, the pass stops
    after the page in progress with ``complete=False`` and its checkpoint saved, to be
    continued by the next call. ``heartbeat`` is called after every GitHub answer (the task
    layer renews its lease there; raising from it aborts the sync). ``request_id`` names the
    request: a full sync asked again by the same request (a retried or redelivered message)
    resumes the pass it started instead of starting over.

    Raises the typed ``GitHubError``s of ``github_client``; whatever was stored before the
    error stays stored, and the checkpoint says where to continue.
    """
    if client is None:
        client = client_for_integration(tracked_repo.integration)
    client.after_request = heartbeat
    requests_before = client.requests_made

    saved = (
        Checkpoint.from_json(tracked_repo.sync_checkpoint) if tracked_repo.sync_checkpoint else None
    )
    restart = (full or all_history) and not (saved and request_id and saved.origin == request_id)
    if saved is not None and not restart:
        checkpoint = saved
        result = SyncResult(full_name=tracked_repo.full_name, kind=checkpoint.kind, resumed=True)
    elif tracked_repo.sync_watermark is not None and not restart:
        checkpoint = Checkpoint(
            kind="incremental", since=tracked_repo.sync_watermark, origin=request_id
        )
        result = SyncResult(full_name=tracked_repo.full_name, kind="incremental")
    else:
        if all_history:
            since = BEGINNING_OF_GITHUB
        else:
            days = settings.GITHUB_SYNC_DAYS_BACK if days_back is None else days_back
            since = timezone.now() - timedelta(days=days)
        checkpoint = Checkpoint(kind="full", since=since.replace(microsecond=0), origin=request_id)
        result = SyncResult(full_name=tracked_repo.full_name, kind="full")

    logger.info(
        "repo_sync.started",
        extra={
            "repo_id": tracked_repo.pk,
            "kind": result.kind,
            "resumed": result.resumed,
            "since": checkpoint.since.isoformat(),
        },
    )
    try:
        _run_pass(
            client=client,
            tracked_repo=tracked_repo,
            checkpoint=checkpoint,
            result=result,
            max_pages=max_pages,
            deadline=None if time_budget is None else result.started + time_budget,
            progress=progress,
            requests_before=requests_before,
        )
    finally:
        result.requests_used = client.requests_made - requests_before
        result.duration = time.monotonic() - result.started
    logger.info(
        "repo_sync.finished" if result.complete else "repo_sync.paused",
        extra={"repo_id": tracked_repo.pk, "pages": result.pages, "requests": result.requests_used},
    )
    return result


def _run_pass(
    *,
    client: GitHubClient,
    tracked_repo: TrackedRepository,
    checkpoint: Checkpoint,
    result: SyncResult,
    max_pages: int | None,
    deadline: float | None,
    progress: ProgressCallback | None,
    requests_before: int,
) -> None:
    pages_this_call = 0
    while True:
        out_of_pages = max_pages is not None and pages_this_call >= max_pages
        out_of_time = deadline is not None and pages_this_call and time.monotonic() >= deadline
        if out_of_pages or out_of_time:
            _save_position(tracked_repo, checkpoint=checkpoint)
            return
        try:
            page = client.list_issues_page(
                tracked_repo.full_name,
                since=checkpoint.since,
                page=checkpoint.page,
                per_page=PER_PAGE,
                sort=checkpoint.order,
                direction="asc",
                etag=_known_etag(tracked_repo, checkpoint),
            )
        except GitHubDeepPaginationError:
            if checkpoint.order != "created":
                raise
            # More than ~10,000 records updated since a bulk edit: finish the tie group with
            # offset pages in updated order instead (see the module docstring).
            checkpoint = _replace(
                checkpoint, order="updated", page=2, ceiling=None, tie_offsets=True
            )
            continue
        pages_this_call += 1
        result.pages += 1
        if page.not_modified:
            # The listing at the watermark is exactly what it was when the last pass ended:
            # nothing changed, and GitHub did not charge for asking.
            result.complete = True
            result.watermark = tracked_repo.sync_watermark
            return

        items = page.items
        changed = _fetch_changed(
            client=client, tracked_repo=tracked_repo, items=items, result=result
        )
        position = _next_position(client, tracked_repo, checkpoint, page)
        # The page's rows and the position after it commit together: a pass killed at any
        # point resumes from the last committed page, never past unstored data.
        with transaction.atomic():
            result.prs_upserted += pull_requests_upsert(
                tracked_repo=tracked_repo, pull_requests=changed
            )
            if position.watermark is not None:
                _save_position(
                    tracked_repo,
                    checkpoint=None,
                    watermark=position.watermark,
                    etag=position.etag,
                )
                result.watermark = position.watermark
            else:
                _save_position(tracked_repo, checkpoint=position.checkpoint)
        if progress is not None:
            result.requests_used = client.requests_made - requests_before
            result.duration = time.monotonic() - result.started
            progress(result)
        if position.watermark is not None:
            result.complete = True
            return
        checkpoint = position.checkpoint


def _known_etag(tracked_repo: TrackedRepository, checkpoint: Checkpoint) -> str | None:
    """The stored ETag, if this request is the one it was taken from."""
    same_request = (
        checkpoint.order == "updated"
        and checkpoint.page == 1
        and checkpoint.since == tracked_repo.sync_watermark
    )
    return (tracked_repo.sync_listing_etag or None) if same_request else None


class _Position(NamedTuple):
    checkpoint: Checkpoint
    watermark: datetime | None = None  # set when the pass is finished
    etag: str = ""  # of the finishing request, when it is the next pass's first request


def _next_position(
    client: GitHubClient,
    tracked_repo: TrackedRepository,
    checkpoint: Checkpoint,
    page: IssuesPage,
) -> _Position:
    """Where the pass goes after ``page``: the next checkpoint, or the final watermark."""
    items = page.items
    last = parse_github_time(items[-1]["updated_at"]) if items else None

    if checkpoint.order == "created":
        if len(items) < PER_PAGE:
            return _Position(checkpoint, watermark=checkpoint.ceiling or checkpoint.since)
        return _Position(_replace(checkpoint, page=checkpoint.page + 1))

    if len(items) < PER_PAGE and (last is None or last <= checkpoint.since):
        # The end of the listing, and a page that starts at its own last updated_at: every
        # record updated before it is stored, any edit from now on gets an updated_at at or
        # after it, and this very request is the next pass's first, so its ETag lets that
        # pass learn "nothing changed" from a free 304.
        reusable = checkpoint.page == 1 and page.etag
        return _Position(checkpoint, watermark=checkpoint.since, etag=page.etag if reusable else "")
    if last > checkpoint.since:
        # Keyset step; on a short page it is one more request that ends the pass at ``last``.
        return _Position(_replace(checkpoint, since=last, page=1, tie_offsets=False))
    # A full page all at ``since``: more records share this second than a page holds.
    if checkpoint.tie_offsets:
        return _Position(_replace(checkpoint, page=checkpoint.page + 1))
    ceiling = _newest_update(client, tracked_repo.full_name, since=checkpoint.since)
    return _Position(_replace(checkpoint, order="created", page=1, ceiling=ceiling))


def _replace(checkpoint: Checkpoint, **changes: Any) -> Checkpoint:
    return Checkpoint(**{**checkpoint.__dict__, **changes})


def _newest_update(client: GitHubClient, full_name: str, *, since: datetime) -> datetime:
    newest = client.list_issues_page(
        full_name, since=since, page=1, per_page=1, sort="updated", direction="desc"
    ).items
    return parse_github_time(newest[0]["updated_at"]) if newest else since


def _fetch_changed(
    *,
    client: GitHubClient,
    tracked_repo: TrackedRepository,
    items: list[dict[str, Any]],
    result: SyncResult,
) -> list[PullRequestData]:
    """Details of the pull requests on one listing page that changed since we stored them.

    Plain issues are recognised by the absence of the ``pull_request`` key in the JSON we
    already have (PyGithub's ``issue.pull_request`` would cost a request per plain issue).
    A PR listed with the ``updated_at`` we already store needs no detail request.
    """
    pulls = {item["number"]: item for item in items if "pull_request" in item}
    result.items_skipped += len(items) - len(pulls)
    stored = stored_updated_at(tracked_repo=tracked_repo, numbers=list(pulls))
    changed = []
    for number, item in pulls.items():
        known = stored.get(number)
        if known is not None and known >= parse_github_time(item["updated_at"]):
            result.items_skipped += 1
        else:
            changed.append(number)

    if settings.GITHUB_PR_DETAILS == "graphql" and changed:
        details = client.get_pulls_details(tracked_repo.full_name, changed)
        for number in details.missing:
            # Listed as a PR a moment ago, gone now (e.g. transferred): nothing to store.
            logger.warning(
                "repo_sync.pull_vanished", extra={"repo_id": tracked_repo.pk, "number": number}
            )
        result.items_skipped += len(details.missing)
        result.details_fetched += len(details.found)
        return [PullRequestData.from_graphql(node) for node in details.found.values()]

    fetched: list[PullRequestData] = []
    try:
        for number in changed:
            try:
                data = client.get_pull(tracked_repo.full_name, number)
            except GitHubNotFound:
                # Listed as a PR a moment ago, gone now (e.g. transferred): nothing to store.
                logger.warning(
                    "repo_sync.pull_vanished",
                    extra={"repo_id": tracked_repo.pk, "number": number},
                )
                result.items_skipped += 1
                continue
            fetched.append(PullRequestData.from_rest(data))
            result.details_fetched += 1
    except BaseException:
        # What was fetched before the error (a rate limit mid-page) is correct data: keep it,
        # so the page listed again next time costs no detail request for these PRs. The
        # checkpoint does not move.
        result.prs_upserted += pull_requests_upsert(
            tracked_repo=tracked_repo, pull_requests=fetched
        )
        raise
    return fetched


def _save_position(
    tracked_repo: TrackedRepository,
    *,
    checkpoint: Checkpoint | None,
    watermark: datetime | None = None,
    etag: str = "",
) -> None:
    updates: dict[str, Any] = {"sync_checkpoint": checkpoint.to_json() if checkpoint else None}
    if watermark is not None:
        # The ETag belongs to the listing at this watermark and is replaced with it.
        updates["sync_watermark"] = watermark
        updates["sync_listing_etag"] = etag
    TrackedRepository.objects.filter(pk=tracked_repo.pk).update(**updates)
    for name, value in updates.items():
        setattr(tracked_repo, name, value)
