"""Running the rounds and measuring them: fan-out, waiting, the injected events, the tally of
the emulator's request log and the check of every repository against the emulator.

Import after ``django.setup()`` (models).
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import redis
from django.db import connection
from django.db.models import Count, Q
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from apps.integrations import tasks
from apps.integrations.models import PullRequest, TrackedRepository
from bench.load.config import LoadConfig, LoadError
from bench.load.fleet import Fleet
from devtools.github_emulator import GitHubEmulator, RequestRecord
from devtools.github_truth import pull_request_differences

Status = TrackedRepository.SyncStatus
POLL_SECONDS = 0.5
PROGRESS_EVERY_SECONDS = 15


def say(message: str) -> None:
    print(f"[load] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- seams


def worker_busy_seconds(exporter_urls: list[str]) -> float | None:
    """Seconds the worker threads have spent processing messages, summed over the worker
    groups: each group's exporter (``WORKER_METRICS``) sums its processes'
    ``dramatiq_message_duration_milliseconds_sum`` over actors and queues. None when there
    is no exporter or one does not answer (then utilisation prints "n/a")."""
    if not exporter_urls:
        return None
    milliseconds = 0.0
    for url in exporter_urls:
        try:
            with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310 - our loopback
                text = answer.read().decode()
        except OSError:
            return None
        for family in text_string_to_metric_families(text):
            milliseconds += sum(
                sample.value
                for sample in family.samples
                if sample.name == "dramatiq_message_duration_milliseconds_sum"
            )
    return milliseconds / 1000


# --------------------------------------------------------------------------- figures


@dataclass
class SyncNow:
    ids: list[int]
    sent_at: datetime
    fleet_done_at_send: int
    latencies: dict[int, float] = field(default_factory=dict)  # first sync after the send
    waiting_ids: list[int] = field(default_factory=list)  # the fan-out's, not synced yet
    finished_after: int = 0  # of those, how many finished after the last "sync now" one


@dataclass
class Tally:
    requests: int = 0
    not_modified: int = 0
    random_errors: int = 0
    rate_limited: int = 0
    rate_limited_by_window: Counter[tuple[str, str, int]] = field(default_factory=Counter)
    by_kind: Counter[str] = field(default_factory=Counter)

    @classmethod
    def of(cls, records: list[RequestRecord], token_team: dict[str, str]) -> Tally:
        tally = cls(requests=len(records))
        for record in records:
            tally.by_kind["graphql" if record.path.endswith("/graphql") else "rest"] += 1
            if record.status == 304:
                tally.not_modified += 1
            if record.fault == "random_error":
                tally.random_errors += 1
            if record.rate_limited:
                tally.rate_limited += 1
                team = token_team.get(record.token or "", "?")
                key = (team, record.rate_limited, record.rate_limit_reset)
                tally.rate_limited_by_window[key] += 1
        return tally

    @property
    def most_in_one_window(self) -> int:
        return max(self.rate_limited_by_window.values(), default=0)


@dataclass
class Check:
    repos_checked: int
    excluded: int  # the revoked team's repositories
    missing: int
    stale: int
    extra: int
    repos_differing: int


@dataclass
class RoundResult:
    name: str
    started_at: datetime  # when the fan-out was asked for
    seconds: float
    synced: int  # idle, synced in this round
    errors: int  # error at the end of the round
    disconnected: int  # of those, repositories of a disconnected integration
    tally: Tally
    latencies: list[float]  # fan-out to each repository's sync finishing, seconds
    busy_seconds: float | None
    check: Check
    redis_peak_bytes: int
    redis_growth_bytes: int  # the peak above what Redis held when the round began
    events: list[str] = field(default_factory=list)
    sync_now: SyncNow | None = None
    changed: tuple[int, int, int] | None = None  # round 2: repositories, edited, opened


# --------------------------------------------------------------------------- the run


@dataclass
class Injection:
    """Something done once the round is ``at`` (a share of repositories done) along."""

    at: float
    action: Callable[[int], str | None]  # gets the done count, returns an event line
    done: bool = False


class Runner:
    def __init__(
        self,
        *,
        config: LoadConfig,
        emu: GitHubEmulator,
        fleet: Fleet,
        redis_url: str,
        root: Path,
        env: dict[str, str],
        workers: subprocess.Popen,
        logs: Path,
        exporter_urls: Sequence[str] = (),
    ) -> None:
        self.config = config
        self.emu = emu
        self.fleet = fleet
        self.redis = redis.Redis.from_url(redis_url)
        self.root = root
        self.env = env
        self.workers = workers
        self.logs = logs
        self.token_team = {team.token: team.slug for team in fleet.teams}
        self.total = len(fleet.repo_team)
        self._pending_sync_now: SyncNow | None = None  # sent by an injection this round
        self.exporter_urls = list(exporter_urls)  # the worker groups' metrics

    # ------------------------------------------------------------------ one round

    def run_round(self, name: str, injections: Sequence[Injection] = ()) -> RoundResult:
        self.emu.clear_requests()
        redis_before = int(self.redis.info("memory")["used_memory"])
        redis_peak = redis_before
        busy_before = worker_busy_seconds(self.exporter_urls)
        say(f"{name}: fan-out (manage.py sync_all)")
        started_at = timezone.now()
        started = time.monotonic()
        self._sync_all()
        events: list[str] = []
        sync_now: SyncNow | None = None
        last_progress = started
        while True:
            done, counts = self._done(started_at)
            redis_peak = max(redis_peak, int(self.redis.info("memory")["used_memory"]))
            elapsed = time.monotonic() - started
            for injection in injections:
                if not injection.done and done >= injection.at * self.total:
                    injection.done = True
                    line = injection.action(done)
                    if line:
                        events.append(f"{elapsed:,.0f} s: {line}")
                        say(f"{name}: {line}")
            sync_now = sync_now or self._pending_sync_now
            if sync_now is not None:
                self._note_sync_now(sync_now)
            if done >= self.total and (sync_now is None or self._sync_now_complete(sync_now)):
                break
            if time.monotonic() - last_progress >= PROGRESS_EVERY_SECONDS:
                last_progress = time.monotonic()
                say(f"{name}: {done:,}/{self.total:,} done after {elapsed:,.0f} s {counts}")
            if elapsed > self.config.round_timeout_seconds:
                raise LoadError(
                    f"{name} did not finish within {self.config.round_timeout_seconds} s "
                    f"(LOAD_ROUND_TIMEOUT_SECONDS): {done:,}/{self.total:,} done, statuses "
                    f"{counts}; logs in {self.logs}"
                )
            if self.workers.poll() is not None:
                raise LoadError(
                    f"the workers exited with code {self.workers.returncode}; see "
                    f"{self.logs / 'workers.log'}"
                )
            time.sleep(POLL_SECONDS)
        seconds = time.monotonic() - started
        if sync_now is not None:
            sync_now.finished_after = self._finished_after(sync_now)
        self._pending_sync_now = None
        busy_after = worker_busy_seconds(self.exporter_urls)
        records = self.emu.requests
        self.emu.clear_requests()
        say(f"{name}: done in {seconds:,.1f} s; checking every repository against the emulator")
        errors = TrackedRepository.objects.filter(sync_status=Status.ERROR)
        return RoundResult(
            name=name,
            started_at=started_at,
            seconds=seconds,
            synced=self._synced(started_at).count(),
            errors=errors.count(),
            disconnected=errors.filter(integration__credential__isnull=True).count(),
            tally=Tally.of(records, self.token_team),
            latencies=[
                (at - started_at).total_seconds()
                for at in self._synced(started_at).values_list("last_sync_at", flat=True)
            ],
            busy_seconds=(
                busy_after - busy_before
                if busy_after is not None and busy_before is not None
                else None
            ),
            check=self.check(),
            redis_peak_bytes=redis_peak,
            redis_growth_bytes=redis_peak - redis_before,
            events=events,
            sync_now=sync_now,
        )

    def _sync_all(self) -> None:
        done = subprocess.run(
            [sys.executable, "manage.py", "sync_all"],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            raise LoadError(f"manage.py sync_all failed: {done.stderr.strip()[-300:]}")

    def _synced(self, since: datetime):
        return TrackedRepository.objects.filter(sync_status=Status.IDLE, last_sync_at__gte=since)

    def _done(self, since: datetime) -> tuple[int, dict[str, int]]:
        """Repositories this round is done with: synced since it started, or ``error``
        (a disconnected integration's from any time; others' only if set in this round)."""
        done = TrackedRepository.objects.filter(
            Q(sync_status=Status.IDLE, last_sync_at__gte=since)
            | Q(sync_status=Status.ERROR, integration__credential__isnull=True)
            | Q(sync_status=Status.ERROR, sync_status_changed_at__gte=since)
        ).count()
        counts = dict(
            TrackedRepository.objects.values_list("sync_status")
            .annotate(n=Count("pk"))
            .values_list("sync_status", "n")
        )
        return done, counts

    # ------------------------------------------------------------------ injections

    def drain_dry_tokens(self, done: int) -> str:
        """The dry tokens' REST budget is gone (another app of the team spent it) until a
        full window from now."""
        reset_at = self.emu.now() + timedelta(seconds=self.config.rate_window_seconds)
        for slug in self.fleet.dry:
            self.emu.set_rate_limit(self.fleet.team(slug).token, remaining=0, reset_at=reset_at)
        return (
            f"the tokens of {', '.join(self.fleet.dry)} ran dry for "
            f"{self.config.rate_window_seconds} s"
        )

    def revoke(self, done: int) -> str:
        team = self.fleet.team(self.fleet.revoked)
        self.emu.revoke_token(team.token)
        return f"revoked the token of {team.slug} ({len(team.repo_ids)} repositories)"

    def sync_now(self, done: int) -> str:
        excluded = [*self.fleet.dry, self.fleet.revoked]
        # The back of the fan-out: it enqueued in id order.
        ids = list(
            TrackedRepository.objects.filter(last_sync_at__isnull=True, sync_status=Status.QUEUED)
            .exclude(team__slug__in=excluded)
            .order_by("-pk")
            .values_list("pk", flat=True)[: self.config.sync_now_repos]
        )
        if not ids:
            return '"sync now" skipped: no repository outside the dry and revoked teams waits'
        waiting = list(
            TrackedRepository.objects.filter(last_sync_at__isnull=True)
            .exclude(pk__in=ids)
            .exclude(team__slug=self.fleet.revoked)
            .values_list("pk", flat=True)
        )
        sent_at = timezone.now()
        # The admin's "sync now": interactive messages on their own queue.
        tasks.enqueue_repository_syncs(tracked_repo_ids=ids, interactive=True)
        self._pending_sync_now = SyncNow(
            ids=ids,
            sent_at=sent_at,
            fleet_done_at_send=done,
            waiting_ids=waiting,
        )
        return f'"sync now" on {len(ids)} repositories not synced yet, via the interactive queue'

    def _finished_after(self, sync_now: SyncNow) -> int:
        """Fan-out repositories waiting when "sync now" was sent that finished after the
        last "sync now" repository: the ones it overtook."""
        if not sync_now.latencies:
            return 0
        last = sync_now.sent_at + timedelta(seconds=max(sync_now.latencies.values()))
        return TrackedRepository.objects.filter(
            pk__in=sync_now.waiting_ids, last_sync_at__gt=last
        ).count()

    def _note_sync_now(self, sync_now: SyncNow) -> None:
        waiting = [pk for pk in sync_now.ids if pk not in sync_now.latencies]
        if not waiting:
            return
        for pk, at in TrackedRepository.objects.filter(
            pk__in=waiting, last_sync_at__gte=sync_now.sent_at
        ).values_list("pk", "last_sync_at"):
            sync_now.latencies[pk] = (at - sync_now.sent_at).total_seconds()

    def _sync_now_complete(self, sync_now: SyncNow) -> bool:
        return len(sync_now.latencies) >= len(sync_now.ids)

    # ------------------------------------------------------------------ checks, sizes

    def check(self) -> Check:
        """Every repository's PRs against the emulator, except the revoked team's (its
        integration is disconnected: nothing can sync them)."""
        revoked = set(self.fleet.team(self.fleet.revoked).repo_ids)
        missing = stale = extra = differing = checked = 0
        for repo in TrackedRepository.objects.exclude(pk__in=revoked).only("pk", "full_name"):
            found = pull_request_differences(self.emu, repo)
            checked += 1
            missing += len(found.missing)
            stale += len(found.stale)
            extra += len(found.extra)
            differing += bool(found)
        return Check(
            repos_checked=checked,
            excluded=len(revoked),
            missing=missing,
            stale=stale,
            extra=extra,
            repos_differing=differing,
        )


@dataclass
class Sizes:
    """What the run left in the database and Redis, for the scale note."""

    pull_requests: int
    tracked: int
    database_bytes: int | None
    pull_request_table_bytes: int | None
    redis_used_bytes: int


def sizes(runner: Runner) -> Sizes:
    database = table = None
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_database_size(current_database()), pg_total_relation_size(%s)",
                [PullRequest._meta.db_table],
            )
            database, table = cursor.fetchone()
    return Sizes(
        pull_requests=PullRequest.objects.count(),
        tracked=TrackedRepository.objects.count(),
        database_bytes=database,
        pull_request_table_bytes=table,
        redis_used_bytes=int(runner.redis.info("memory")["used_memory"]),
    )
