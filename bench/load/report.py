"""The printed table, its notes and the scale figures derived from them."""

from __future__ import annotations

import math
import os
import platform
from datetime import UTC, datetime

from bench.load.config import LoadConfig
from bench.load.fleet import Fleet
from bench.load.rounds import RoundResult, Sizes

MIB = 1024 * 1024
# GitHub's primary limits per user token and hour: REST requests, GraphQL points.
GITHUB_REST_PER_HOUR = 5_000
GITHUB_GRAPHQL_PER_HOUR = 5_000
TARGET_REPOS = 100_000


def percentile(values: list[float], share: float) -> float | None:
    """Nearest-rank percentile (``share`` in 0..1) or None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def _secs(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:,.1f} s" if value < 1_000 else f"{value:,.0f} s"


def _int(value: float) -> str:
    return f"{value:,.0f}"


def utilisation(result: RoundResult, config: LoadConfig) -> str:
    if result.busy_seconds is None:
        return "n/a"
    capacity = config.workers * config.threads * result.seconds
    return f"{100 * result.busy_seconds / capacity:.0f} %" if capacity else "—"


def _rows(results: list[RoundResult], config: LoadConfig, total: int) -> list[tuple[str, ...]]:
    def row(measure: str, cell) -> tuple[str, ...]:
        return (measure, *(cell(r) for r in results))

    def latencies(r: RoundResult) -> str:
        cuts = [percentile(r.latencies, q) for q in (0.50, 0.95, 0.99)]
        return " / ".join(_secs(c) for c in cuts)

    def sync_now(r: RoundResult) -> str:
        if r.sync_now is None:
            return "—"
        values = list(r.sync_now.latencies.values())
        return f"{_secs(percentile(values, 0.5))} / {_secs(max(values, default=None))}"

    def rate_windows(r: RoundResult) -> str:
        windows = r.tally.rate_limited_by_window
        tokens = len({team for team, _, _ in windows})
        return f"{tokens} / {len(windows)} / {r.tally.most_in_one_window}"

    return [
        ("measure", *(r.name for r in results)),
        row("repositories synced / error (disconnected)",
            lambda r: f"{r.synced:,} / {r.errors:,} ({r.disconnected:,})"),
        row("time until all idle or error", lambda r: _secs(r.seconds)),
        row("repositories per minute", lambda r: _int(total / r.seconds * 60)),
        row("requests (REST + GraphQL)",
            lambda r: f"{r.tally.requests:,} ({r.tally.by_kind['rest']:,} + "
            f"{r.tally.by_kind['graphql']:,})"),
        row("requests per repository synced",
            lambda r: f"{r.tally.requests / max(r.synced, 1):.2f}"),
        row("  answered 304 (free)", lambda r: _int(r.tally.not_modified)),
        row("  answered 502 (injected)", lambda r: _int(r.tally.random_errors)),
        row("rate-limited answers", lambda r: _int(r.tally.rate_limited)),
        row("  tokens / token-windows / most in one", rate_windows),
        row("fan-out → synced p50 / p95 / p99", latencies),
        row("worker-thread utilisation", lambda r: utilisation(r, config)),
        row('"sync now" latency p50 / max', sync_now),
        row("Redis peak memory", lambda r: f"{r.redis_peak_bytes / MIB:,.1f} MiB"),
        row("check: missing / stale / extra PRs",
            lambda r: f"{r.check.missing} / {r.check.stale} / {r.check.extra}"),
    ]  # fmt: skip


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for index, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [
            cell.rjust(widths[i + 1]) for i, cell in enumerate(row[1:])
        ]
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def scale(results: list[RoundResult], config: LoadConfig, sizes: Sizes, total: int) -> list[str]:
    """Per-token and per-thread coverage from the daily round (round 2), and what
    ``TARGET_REPOS`` repositories would need."""
    daily = results[1]
    tally = daily.tally
    rest_charged = (
        tally.by_kind["rest"] - tally.not_modified - tally.rate_limited - tally.random_errors
    )
    synced = max(daily.synced, 1)
    rest_per_repo = max(rest_charged, 1) / synced
    graphql_per_repo = max(tally.by_kind["graphql"], 1) / synced
    per_token = min(
        GITHUB_REST_PER_HOUR * 24 / rest_per_repo, GITHUB_GRAPHQL_PER_HOUR * 24 / graphql_per_repo
    )
    if daily.busy_seconds is not None:
        thread_seconds = daily.busy_seconds / synced
        how = "busy time"
    else:
        # The round's last repositories mostly wait out a 502's retry backoff, not threads:
        # the time until 95% were synced says more about throughput than the whole round.
        p95 = percentile(daily.latencies, 0.95) or daily.seconds
        thread_seconds = config.workers * config.threads * p95 / (0.95 * synced)
        how = "W × T × time to 95% synced, as if every thread were busy: an upper bound"
    per_thread = 86_400 / thread_seconds
    first = results[0]
    first_rest = first.tally.by_kind["rest"] - first.tally.not_modified
    first_synced = max(first.synced, 1)
    prs_per_repo = sizes.pull_requests / max(sizes.tracked, 1)
    lines = [
        f"scale (from this run; GitHub's limits {GITHUB_REST_PER_HOUR:,} REST requests and "
        f"{GITHUB_GRAPHQL_PER_HOUR:,} GraphQL points per token and hour)",
        f"- a daily incremental costs {rest_per_repo:.2f} charged REST requests and "
        f"{graphql_per_repo:.2f} GraphQL points per repository (round 2, {config.changed_share:.0%}"
        f" changed; 304s are free): one token covers ~{per_token:,.0f} repositories a day",
        f"- a first sync costs {first_rest / first_synced:.2f} REST requests and "
        f"{first.tally.by_kind['graphql'] / first_synced:.2f} GraphQL points per repository "
        f"(round 1, {prs_per_repo:,.0f} PRs per repository on average): one token onboards "
        f"~{GITHUB_REST_PER_HOUR / max(first_rest / first_synced, 0.01):,.0f} such "
        "repositories an hour",
        f"- one worker thread: {thread_seconds:.2f} thread-seconds per repository per daily "
        f"round ({how}): ~{per_thread:,.0f} repositories a day",
        f"- Redis: {daily.redis_peak_bytes / MIB:,.1f} MiB peak during the daily fan-out of "
        f"{total:,} messages, {daily.redis_growth_bytes / MIB:,.2f} MiB above the round's start"
        f" ({daily.redis_growth_bytes / total:,.0f} B per repository)",
    ]
    if sizes.database_bytes is not None:
        lines.append(
            f"- PostgreSQL: {sizes.pull_requests:,} PR rows in "
            f"{sizes.pull_request_table_bytes / MIB:,.1f} MiB with indexes "
            f"({sizes.pull_request_table_bytes / max(sizes.pull_requests, 1):,.0f} B per row); "
            f"database {sizes.database_bytes / MIB:,.1f} MiB"
        )
    factor = TARGET_REPOS / total
    threads_for_an_hour = TARGET_REPOS * thread_seconds / 3_600
    lines += [
        f"- {TARGET_REPOS:,} repositories: {TARGET_REPOS / per_token:,.2f} tokens' worth of "
        f"daily budget (each team brings its own token); ~{math.ceil(threads_for_an_hour):,} "
        f"worker threads to finish the daily round within an hour; Redis "
        f"~{daily.redis_growth_bytes * factor / MIB:,.0f} MiB above its baseline at the "
        f"fan-out's peak; "
        f"~{sizes.pull_requests * factor:,.0f} PR rows"
        + (
            f", ~{sizes.pull_request_table_bytes * factor / 1024**3:,.1f} GiB"
            if sizes.pull_request_table_bytes
            else ""
        )
        + f" at this run's {prs_per_repo:,.0f} PRs per repository",
    ]
    return lines


def render(
    *,
    config: LoadConfig,
    fleet: Fleet,
    results: list[RoundResult],
    sizes: Sizes,
    database: str,
    driver_peak_rss: int,
) -> str:
    total = len(fleet.repo_team)
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    mode = " · LOAD_QUICK" if config.quick else ""
    out = [
        f"tformance fleet load · {now} · {platform.node()} ({_cpus()} CPUs){mode}",
        f"{total:,} repositories over {config.teams} teams (one token each), "
        f"{fleet.pulls:,} PRs + {fleet.issues:,} issues; large: "
        + ", ".join(f"{name} ({prs:,} PRs)" for name, prs in fleet.large),
        f"workers {config.workers} × {config.threads} threads (rundramatiq), scheduler running, "
        f"fan-outs by manage.py sync_all; {database}; emulator latency {config.latency_ms:g} ms,"
        f" {config.error_rate:.1%} of requests answered 502 (seed {config.seed}), rate-limit "
        f"window {config.rate_window_seconds} s",
        "settings: " + ", ".join(f"{k}={v}" for k, v in config.process_settings.items()),
        "",
    ]
    out += _table(_rows(results, config, total))
    revoked = fleet.team(fleet.revoked)
    first = results[0]
    out += ["", "notes"]
    out += [f"- round 1 at {event}" for event in first.events]
    if first.sync_now is not None:
        sync_now = first.sync_now
        ends = first.seconds - max((sync_now.sent_at - first.started_at).total_seconds(), 0)
        out.append(
            f'- "sync now": sent when {sync_now.fleet_done_at_send:,}/{total:,} were done, '
            f"{len(sync_now.ids)} repositories from the back of the fan-out; it overtook "
            f"{sync_now.finished_after:,} of the {len(sync_now.waiting_ids):,} fan-out "
            f"repositories still waiting (they finished after its last one); the fan-out "
            f"needed {_secs(ends)} more"
        )
    out.append(
        f"- dry tokens (REST budget drained for a window mid-round): {', '.join(fleet.dry)}; "
        f"revoked: {revoked.slug}, whose {len(revoked.repo_ids)} repositories end `error` with "
        "the integration disconnected: counted as done, and EXCLUDED from the check"
    )
    changed = results[1].changed
    if changed:
        out.append(
            f"- round 2: {changed[0]:,} repositories changed on GitHub ({changed[1]:,} PRs "
            f"edited or merged, {changed[2]:,} opened); round 3: nothing changed"
        )
    out.append(
        "- check: every repository's PRs against the emulator after each round, as "
        f"tests.builders.assert_matches_github ({first.check.repos_checked:,} repositories)"
    )
    out.append(
        "- rate-limited answers: primary-limit refusals (REST 403, GraphQL RATE_LIMITED) from "
        "the emulator's log, grouped by token and reset window"
    )
    out.append(f"- this process (emulator and driver): peak RSS {driver_peak_rss / MIB:,.0f} MiB")
    out += [""] + scale(results, config, sizes, total)
    return "\n".join(out)


def _cpus() -> int:
    return os.cpu_count() or 0
