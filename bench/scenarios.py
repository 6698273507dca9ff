"""The benchmark's scenarios. Each returns plain figures; ``__main__`` prints them.

Import after ``django.setup()`` (models).
"""

from __future__ import annotations

import random
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import dramatiq
from django.conf import settings
from django.db import transaction

from apps.integrations.models import (
    GitHubIntegration,
    IntegrationCredential,
    PullRequest,
    TrackedRepository,
)
from apps.integrations.services.github_sync import SyncResult, repository_sync
from apps.integrations.services.pull_requests import PullRequestData, pull_requests_upsert
from apps.integrations.tasks import QUEUE, enqueue_all_repository_syncs, sync_repository
from apps.teams.models import Team
from bench.baseline import original_store, original_sync
from bench.measure import Phase, RequestTally, measure
from devtools.github_emulator import GitHubEmulator
from devtools.github_emulator.realistic import realistic_pull_fields

# Tokens the in-process emulator accepts (not secrets). Ours and the baseline use different
# tokens so the emulator's log and rate-limit state tell their requests apart.
OURS_TOKEN = "ghp_benchours0000000000000000000000000001"  # noqa: S105
ORIGINAL_TOKEN = "ghp_benchoriginal000000000000000000000002"  # noqa: S105
MEMORY_TOKEN = "ghp_benchmemory00000000000000000000000003"  # noqa: S105
WINDOW_DAYS = 90  # the project's GITHUB_SYNC_DAYS_BACK default; the seeded window is inside it


@dataclass(frozen=True)
class Sizes:
    prs: int = 600
    issues: int = 200
    old_prs: int = 150  # updated before the 90-day window
    old_issues: int = 50
    changed: int = 50
    fanout: int = 10_000
    upserts: int = 20_000
    original_store_sample: int = 2_000  # the per-row update_or_create baseline is slow: a sample
    memory: tuple[int, int] = (1_000, 5_000)

    def quick(self) -> Sizes:
        return Sizes(
            **{
                name: tuple(v // 10 for v in value) if isinstance(value, tuple) else value // 10
                for name, value in self.__dict__.items()
            }
        )


def say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- data


def seed_repository(
    emu: GitHubEmulator,
    full_name: str,
    *,
    prs: int,
    issues: int,
    old_prs: int = 0,
    old_issues: int = 0,
    rng: random.Random,
) -> None:
    """PRs (open, closed, merged, drafts) and plain issues spread evenly over the last 85
    days, plus older ones last updated 105-200 days ago (outside a 90-day window)."""
    now = emu.now()
    emu.add_repo(full_name)

    def add(kinds: list[bool], start: datetime, span: timedelta) -> None:
        step = span / max(len(kinds), 1)
        for i, is_pull in enumerate(kinds):
            created = start + step * i
            updated = created + min(step / 2, timedelta(minutes=30)) * rng.random()
            if not is_pull:
                emu.add_issue(full_name, author="alice", created_at=created, updated_at=updated)
                continue
            emu.add_pull(
                full_name, created_at=created, updated_at=updated, **realistic_pull_fields(rng, i)
            )

    def shuffled(n_pulls: int, n_issues: int) -> list[bool]:
        kinds = [True] * n_pulls + [False] * n_issues
        rng.shuffle(kinds)
        return kinds

    add(shuffled(old_prs, old_issues), now - timedelta(days=200), timedelta(days=95))
    add(shuffled(prs, issues), now - timedelta(days=85), timedelta(days=85) - timedelta(hours=1))


def edit_pulls(emu: GitHubEmulator, full_name: str, count: int, rng: random.Random) -> None:
    """On GitHub, ``count`` PRs of the window change now (edited, or merged when open)."""
    window_start = emu.now() - timedelta(days=85)
    pulls = [i for i in emu.items(full_name) if i.is_pull and i.updated_at >= window_start]
    for item in rng.sample(pulls, count):
        if item.state == "open" and not item.draft:
            emu.update(full_name, item.number, state="merged")
        else:
            emu.update(full_name, item.number, title=item.title + " (edited)", additions=7)


def track(emu: GitHubEmulator, full_name: str, *, token: str, team_slug: str) -> TrackedRepository:
    """A fresh team, integration, credential and tracked repository (as track_repo makes)."""
    record = emu.get_repo(full_name)
    team = Team.objects.create(slug=team_slug, name=team_slug)
    integration = GitHubIntegration.objects.create(team=team, account_login=team_slug)
    IntegrationCredential.objects.create(integration=integration, access_token=token)
    return TrackedRepository.objects.create(
        team=team, integration=integration, github_repo_id=record.id, full_name=record.full_name
    )


def run_sync(tracked_repo_id: int) -> SyncResult:
    """What ``manage.py sync_repo`` does: load the row, run the service to the end."""
    result = repository_sync(tracked_repo=TrackedRepository.objects.get(pk=tracked_repo_id))
    if not result.complete:
        raise RuntimeError(f"sync did not complete: {result.summary()}")
    return result


# --------------------------------------------------------------------------- rows 1-3


@dataclass
class SyncRows:
    full: tuple[Phase, Phase]  # (ours, original design)
    incremental: tuple[Phase, Phase]
    idle: tuple[Phase, Phase]
    stored: int
    original_full_pulls: int
    passes_disagree: list[str]  # phases where the memory pass made other requests


def sync_rows(emu: GitHubEmulator, tally: RequestTally, sizes: Sizes) -> SyncRows:
    """Rows 1-3, run twice on identically seeded repositories: a timed pass (no tracing;
    requests, points, wall time) and a memory pass (tracemalloc; peak memory), because
    tracing doubles the time of Python-bound code but barely touches a throttled loop."""
    for token, login in ((OURS_TOKEN, "bench-ours"), (ORIGINAL_TOKEN, "bench-original")):
        emu.add_token(token, login=login, rate_limit=1_000_000, graphql_rate_limit=1_000_000)
    say("rows 1-3, memory pass (tracemalloc; the baseline without its 0.25 s throttle)")
    memory = _sync_pass(emu, tally, sizes, "bench/widgets-memory", trace_memory=True)
    say("rows 1-3, timed pass")
    timed = _sync_pass(emu, tally, sizes, "bench/widgets", trace_memory=False)
    disagree = []
    for name in ("full", "incremental", "idle"):
        for side, timed_phase, memory_phase in zip(
            ("ours", "baseline"), timed[name], memory[name], strict=True
        ):
            timed_phase.peak_bytes = memory_phase.peak_bytes
            if timed_phase.kinds != memory_phase.kinds:
                disagree.append(f"{name} {side}: {memory_phase.breakdown()}")
    return SyncRows(
        full=timed["full"],
        incremental=timed["incremental"],
        idle=timed["idle"],
        stored=timed["stored"],
        original_full_pulls=timed["full"][1].value,
        passes_disagree=disagree,
    )


def _sync_pass(
    emu: GitHubEmulator, tally: RequestTally, sizes: Sizes, full_name: str, *, trace_memory: bool
) -> dict:
    rng = random.Random(20_250_601)  # the same data and edits in both passes
    seed_repository(
        emu,
        full_name,
        prs=sizes.prs,
        issues=sizes.issues,
        old_prs=sizes.old_prs,
        old_issues=sizes.old_issues,
        rng=rng,
    )
    repo_id = track(emu, full_name, token=OURS_TOKEN, team_slug=full_name.replace("/", "-")).pk

    def ours() -> Phase:
        return measure(emu, tally, OURS_TOKEN, lambda: run_sync(repo_id), trace_memory=trace_memory)

    def original(since: datetime) -> Phase:
        return measure(
            emu,
            tally,
            ORIGINAL_TOKEN,
            lambda: original_sync(
                api_url=emu.api_url,
                token=ORIGINAL_TOKEN,
                full_name=full_name,
                since=since,
                # Sleeping allocates nothing: the memory pass skips the throttle (minutes).
                throttle=not trace_memory,
            ),
            trace_memory=trace_memory,
        )

    say(f"1. full sync, ours ({sizes.prs} PRs + {sizes.issues} issues in the window)")
    ours_full = ours()
    say(f"   {ours_full.requests} requests, {ours_full.seconds:.1f}s; now the original design")
    original_full = original(emu.now() - timedelta(days=WINDOW_DAYS))
    say(f"   {original_full.requests} requests, {original_full.seconds:.1f}s")
    # The original design then sets last_sync_at = now(): its next pass lists from there.
    # (One second on: with `since` inclusive, an edit in the very second a pass ended would be
    # listed again, which happens in the memory pass, whose baseline runs unthrottled.)
    original_since = emu.advance(1)
    stored = PullRequest.objects.filter(tracked_repo_id=repo_id).count()

    emu.advance(1)  # the edits land in a later second than the original's last_sync_at
    edit_pulls(emu, full_name, sizes.changed, rng)
    say(f"2. incremental sync with {sizes.changed} changed PRs")
    incremental = (ours(), original(original_since))
    original_since = emu.advance(1)

    emu.advance(1)
    say("3. incremental sync, nothing changed")
    idle = (ours(), original(original_since))
    return {
        "full": (ours_full, original_full),
        "incremental": incremental,
        "idle": idle,
        "stored": stored,
    }


# --------------------------------------------------------------------------- row 4


@dataclass
class Fanout:
    repositories: int
    enqueued: int
    in_redis: int
    seconds: float
    naive_sent: int
    naive_seconds: float
    create_seconds: float


def fanout(count: int) -> Fanout:
    """``enqueue_all_repository_syncs`` (the fan-out actor's body, in-process) over ``count``
    repositories against the real redis-server, then a naive ``send()`` loop for comparison."""
    say(f"4. fan-out: creating {count:,} tracked repositories")
    started = time.perf_counter()
    per_team = 10
    teams = Team.objects.bulk_create(
        [Team(name=f"fan-{i}", slug=f"fan-{i}") for i in range(count // per_team)]
    )
    integrations = GitHubIntegration.objects.bulk_create(
        [GitHubIntegration(team=team, account_login=team.slug) for team in teams]
    )
    IntegrationCredential.objects.bulk_create(
        [IntegrationCredential(integration=i, access_token=OURS_TOKEN) for i in integrations],
        batch_size=1_000,
    )
    TrackedRepository.objects.bulk_create(
        [
            TrackedRepository(
                team=integration.team,
                integration=integration,
                github_repo_id=800_000_000 + n * per_team + j,
                full_name=f"{integration.team.slug}/repo-{j}",
            )
            for n, integration in enumerate(integrations)
            for j in range(per_team)
        ],
        batch_size=1_000,
    )
    create_seconds = time.perf_counter() - started

    broker = dramatiq.get_broker()
    broker.client.flushdb()
    say("   enqueue_all_repository_syncs()")
    started = time.perf_counter()
    enqueued = enqueue_all_repository_syncs()
    seconds = time.perf_counter() - started
    in_redis = broker.client.hlen(f"{broker.namespace}:{QUEUE}.msgs")

    broker.client.flushdb()
    ids = list(TrackedRepository.objects.values_list("pk", flat=True))
    say("   naive loop of sync_repository.send(id)")
    started = time.perf_counter()
    for pk in ids:
        sync_repository.send(pk)
    naive_seconds = time.perf_counter() - started
    broker.client.flushdb()
    return Fanout(
        repositories=count,
        enqueued=enqueued,
        in_redis=in_redis,
        seconds=seconds,
        naive_sent=len(ids),
        naive_seconds=naive_seconds,
        create_seconds=create_seconds,
    )


# --------------------------------------------------------------------------- row 5


@dataclass
class Upserts:
    rows: int
    existing_rows: int
    insert_seconds: float
    update_seconds: float
    paged_update_seconds: float
    original_rows: int
    original_insert_seconds: float
    original_update_seconds: float


def synthetic_pulls(
    count: int, *, repo: str, updated_at: datetime, title: str = "Change"
) -> list[PullRequestData]:
    created = datetime(2025, 1, 1, tzinfo=UTC)
    return [
        PullRequestData(
            github_id=3_000_000_000 + i,
            number=i + 1,
            title=f"{title} {i + 1}",
            state="open" if i % 3 == 0 else "closed",
            is_draft=i % 17 == 0,
            author_login=f"dev{i % 50}",
            github_created_at=created + timedelta(minutes=i),
            github_updated_at=updated_at,
            closed_at=None if i % 3 == 0 else updated_at,
            merged_at=updated_at if i % 3 == 1 else None,
            additions=i % 800,
            deletions=i % 300,
            changed_files=1 + i % 40,
            commits=1 + i % 12,
            base_ref="main",
            head_ref=f"feature-{i + 1}",
            html_url=f"https://github.com/{repo}/pull/{i + 1}",
        )
        for i in range(count)
    ]


def upserts(count: int, original_sample: int) -> Upserts:
    """``pull_requests_upsert`` on SQLite: ``count`` inserts into a table already holding
    ``count`` rows of another repository, then ``count`` updates of the same rows."""
    team = Team.objects.create(slug="bench-upserts", name="bench-upserts")
    integration = GitHubIntegration.objects.create(team=team, account_login="bench")

    def repo(name: str, github_id: int) -> TrackedRepository:
        return TrackedRepository.objects.create(
            team=team, integration=integration, github_repo_id=github_id, full_name=name
        )

    other = repo("bench/other", 900_000_001)
    target = repo("bench/target", 900_000_002)
    original_repo = repo("bench/original", 900_000_003)
    t0 = datetime(2025, 6, 1, tzinfo=UTC)

    def timed(fn) -> float:
        started = time.perf_counter()
        fn()
        return time.perf_counter() - started

    say(f"5. upserts: {count:,} rows of another repository first")
    pull_requests_upsert(
        tracked_repo=other, pull_requests=synthetic_pulls(count, repo="bench/other", updated_at=t0)
    )
    existing = PullRequest.objects.count()

    rows = synthetic_pulls(count, repo="bench/target", updated_at=t0)
    insert = timed(lambda: pull_requests_upsert(tracked_repo=target, pull_requests=rows))
    rows = synthetic_pulls(count, repo="bench/target", updated_at=t0 + timedelta(hours=1))
    update = timed(lambda: pull_requests_upsert(tracked_repo=target, pull_requests=rows))

    # As the sync writes: a page of at most 100 rows per transaction.
    rows = synthetic_pulls(
        count, repo="bench/target", updated_at=t0 + timedelta(hours=2), title="Paged"
    )

    def paged() -> None:
        for start in range(0, len(rows), 100):
            with transaction.atomic():
                pull_requests_upsert(tracked_repo=target, pull_requests=rows[start : start + 100])

    paged_update = timed(paged)

    say(f"   the original design's per-row update_or_create, a sample of {original_sample:,}")
    rows = synthetic_pulls(original_sample, repo="bench/original", updated_at=t0)
    original_insert = timed(lambda: original_store(tracked_repo=original_repo, pull_requests=rows))
    rows = synthetic_pulls(
        original_sample, repo="bench/original", updated_at=t0 + timedelta(hours=1)
    )
    original_update = timed(lambda: original_store(tracked_repo=original_repo, pull_requests=rows))
    return Upserts(
        rows=count,
        existing_rows=existing,
        insert_seconds=insert,
        update_seconds=update,
        paged_update_seconds=paged_update,
        original_rows=original_sample,
        original_insert_seconds=original_insert,
        original_update_seconds=original_update,
    )


# --------------------------------------------------------------------------- row 6


def memory_rows(
    emu: GitHubEmulator, tally: RequestTally, sizes: tuple[int, ...]
) -> list[tuple[int, Phase]]:
    """Peak memory of a full ``repository_sync`` per repository size (emulator latency 0;
    the client's pacing stays the project's)."""
    rng = random.Random(6)
    emu.add_token(
        MEMORY_TOKEN, login="bench-memory", rate_limit=10_000_000, graphql_rate_limit=10_000_000
    )
    latency, emu.latency = emu.latency, 0.0
    results = []
    try:
        for n in sizes:
            full_name = f"bench/memory-{n}"
            seed_repository(emu, full_name, prs=n, issues=0, rng=rng)
            repo_id = track(emu, full_name, token=MEMORY_TOKEN, team_slug=f"bench-memory-{n}").pk
            say(f"6. memory: full sync of {n:,} PRs (emulator latency 0)")
            phase = measure(
                emu, tally, MEMORY_TOKEN, lambda pk=repo_id: run_sync(pk), trace_memory=True
            )
            results.append((n, phase))
    finally:
        emu.latency = latency
    return results


def client_settings() -> str:
    """The project's settings that shape our sync's requests, as they are in this run."""
    names = ("GITHUB_TOKEN_MIN_INTERVAL_MS", "GITHUB_PR_DETAILS", "GITHUB_SYNC_DAYS_BACK")
    return ", ".join(f"{name}={getattr(settings, name)}" for name in names)
