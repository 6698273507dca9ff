"""`make demo`: the main job end to end, on embedded defaults, with the production processes.

The flow (every step is a real process, as in production, except the emulator):

1. A fresh SQLite database in .demo/ (`manage.py migrate`), or with DATABASE_URL set that
   database, migrated and emptied (it must hold nothing but an earlier demo's data), and a
   `redis-server` on a free loopback port (no persistence, files in .demo/redis/).
2. The GitHub emulator, in this process, seeded with three repositories of two teams (acme,
   globex): hundreds of PRs (drafts, merged, closed, open, one author a deleted account) and
   plain issues. `manage.py track_repo` tracks each repository with its team's token.
3. A Dramatiq worker: `manage.py rundramatiq --processes 1 --threads 4`, in its own process
   group, logging to .demo/worker.log.
4. Round 1: `python -m scheduler --once` enqueues the fan-out `sync_all_repositories`,
   which enqueues one `sync_repository` per repository. acme's repositories sync fully.
   globex's token runs out of rate limit mid-sync (the emulator empties its budget when the
   second listing page is asked for, resetting 15 s later in real time): the worker records
   `rate_limited` with the reset time and sends the message again, delayed until the reset
   (no worker thread sleeps). After the reset it resumes from its checkpoint and finishes.
5. Round 2: a few PRs change in the emulator, `scheduler --once` again: the incremental
   syncs fetch just those changes, for a handful of requests.
6. A summary table (PRs stored, requests GitHub served per repository and round, status, last
   error); then everything started here is stopped, also on failure or Ctrl-C.

A round is over when the broker holds no `github_sync` message (queued, delayed or in
progress) and no repository is queued, syncing or rate limited. It must be over within
DEMO_TIMEOUT seconds (120 by default), or the demo prints the worker log's tail and exits 1.

With DEMO_REPOS=owner/a,owner/b (and GITHUB_TOKEN) it tracks those real repositories from
GITHUB_API_URL instead and syncs them through the same worker, Redis and `scheduler --once`
(no emulator, no request counts, a 600 s default timeout).
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dj_database_url
import psycopg
import redis
from cryptography.fernet import Fernet

from devtools.github_emulator import GitHubEmulator, RequestRecord
from devtools.github_emulator.realistic import AUTHORS, realistic_pull_fields
from devtools.localredis import LocalRedisError, start_redis_server
from devtools.processes import stop_process

ROOT = Path(__file__).resolve().parent.parent
WORKDIR = ROOT / ".demo"
DATABASE = WORKDIR / "demo.sqlite3"
DATABASE_URL = os.environ.get("DATABASE_URL", "").strip() or f"sqlite:///{DATABASE}"
DEMO_TEAMS = {"acme", "globex", "demo"}
WORKER_LOG = WORKDIR / "worker.log"
QUEUE = "github_sync"  # apps.integrations.tasks.QUEUE
BUSY = {"queued", "syncing", "rate_limited"}
TOKENS = {
    "ACME_TOKEN": "ghp_demoacme000000000000000000000000001",
    "GLOBEX_TOKEN": "ghp_demoglobex0000000000000000000000002",
}
RESET_AFTER = timedelta(seconds=15)  # how long globex's token stays out of rate limit


class DemoFailed(Exception):
    """The demo cannot go on; the message says why."""


@dataclass
class Repo:
    full_name: str
    team: str
    token_env: str = "GITHUB_TOKEN"


# --------------------------------------------------------------------------- emulator data


def seed(emu: GitHubEmulator, full_name: str, *, pulls: int, issues: int, rng: random.Random):
    now = emu.now()
    for _ in range(issues):
        created = now - timedelta(days=rng.uniform(0, 150))
        emu.add_issue(
            full_name,
            author=rng.choice(AUTHORS[:-1]),
            created_at=created,
            updated_at=min(now, created + timedelta(days=rng.uniform(0, 10))),
        )
    for i in range(pulls):
        created = now - timedelta(days=rng.uniform(0, 150))
        updated = min(now, created + timedelta(hours=rng.uniform(1, 240)))
        emu.add_pull(
            full_name, created_at=created, updated_at=updated, **realistic_pull_fields(rng, i)
        )


def edit_recent_pulls(emu: GitHubEmulator, full_name: str) -> None:
    """On GitHub, someone edits two recent PRs and merges (or edits) a third."""
    pulls = sorted((i for i in emu.items(full_name) if i.is_pull), key=lambda i: i.updated_at)
    for item in pulls[-3:]:
        if item.state == "open" and not item.draft:
            emu.update(full_name, item.number, state="merged")
        else:
            emu.update(full_name, item.number, title=item.title + " (edited)")


class RateLimitMidSync:
    """Emulator hook: the token's hourly budget runs out when the sync of ``full_name`` asks
    for its second listing page (as if another integration had spent it), and resets
    ``reset_after`` later (real time). Whether PR details cost one request each (REST) or one
    per hundred (GraphQL), this lands mid-sync, with a checkpoint and PRs stored."""

    def __init__(self, emu: GitHubEmulator, token: str, full_name: str, reset_after: timedelta):
        self.emu, self.token, self.reset_after = emu, token, reset_after
        self.listing = f"/repos/{full_name}/issues".lower()
        self.listings = 0
        self.reset_at: datetime | None = None

    def __call__(self, record: RequestRecord) -> None:
        if self.reset_at or record.token != self.token or record.path.lower() != self.listing:
            return
        self.listings += 1
        if self.listings == 2:
            self.reset_at = self.emu.now() + self.reset_after
            self.emu.set_rate_limit(self.token, remaining=0, reset_at=self.reset_at)


class RequestLog:
    """Emulator hook: which repository each request the emulator serves is for.

    A REST path names its repository (/repos/OWNER/NAME/...). A GraphQL query (POST /graphql)
    does not: it counts for the repository last asked for on the same connection. Each sync
    uses its own keep-alive connection, which the emulator serves on one thread.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.entries: list[tuple[datetime | None, str]] = []  # (emulator time, repository)
        self.last_repo: dict[int, str] = {}  # by emulator thread

    def __call__(self, record: RequestRecord) -> None:
        parts = record.path.lower().split("/")
        thread = threading.get_ident()
        if len(parts) >= 4 and parts[1] == "repos":
            repo = self.last_repo[thread] = f"{parts[2]}/{parts[3]}"
        elif record.path.endswith("/graphql"):
            repo = self.last_repo.get(thread, "(unattributed GraphQL)")
        else:
            return  # GET /user and the like, made by track_repo
        with self.lock:
            self.entries.append((record.at, repo))

    def mark(self) -> int:
        with self.lock:
            return len(self.entries)

    def count(self, full_name: str, *, start: int = 0, since: datetime | None = None) -> int:
        """Requests for ``full_name`` after mark ``start`` (and, given ``since``, at or after
        that emulator time)."""
        with self.lock:
            entries = self.entries[start:]
        return sum(
            1
            for at, repo in entries
            if repo == full_name.lower() and (since is None or (at is not None and at >= since))
        )


# --------------------------------------------------------------------------- processes


def manage(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_redis(stack: contextlib.ExitStack) -> str:
    """A redis-server on a free loopback port, without persistence; returns its URL."""
    try:
        # Its own session: a terminal's Ctrl-C must not stop it before the worker.
        server = start_redis_server(WORKDIR / "redis", new_session=True)
    except LocalRedisError as exc:
        raise DemoFailed(str(exc)) from None
    stack.callback(server.stop)
    return server.url


def start_worker(env: dict[str, str], stack: contextlib.ExitStack) -> subprocess.Popen:
    """`manage.py rundramatiq` in its own process group, logging to .demo/worker.log."""
    with WORKER_LOG.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "rundramatiq", "--processes", "1", "--threads", "4"]
            + ["--worker-shutdown-timeout", "5000"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    stack.callback(stop_process, process)
    deadline = time.monotonic() + 60
    while "Worker process is ready for action" not in WORKER_LOG.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            raise DemoFailed(f"the worker did not start\n{log_tail()}")
        time.sleep(0.1)
    return process


def schedule_once(env: dict[str, str]) -> None:
    """The scheduler's fan-out, once: enqueues `sync_all_repositories`."""
    result = subprocess.run(
        [sys.executable, "-m", "scheduler", "--once"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if result.returncode != 0:
        raise DemoFailed(f"scheduler --once failed: {result.stderr.strip()}")
    print("scheduler --once: enqueued sync_all_repositories")


def log_tail(lines: int = 30) -> str:
    text = WORKER_LOG.read_text(errors="replace") if WORKER_LOG.exists() else ""
    tail = "\n".join("  | " + line for line in text.splitlines()[-lines:])
    return f"last lines of {WORKER_LOG.relative_to(ROOT)}:\n{tail}"


# --------------------------------------------------------------------------- observing


@dataclass(frozen=True)
class RepoState:
    full_name: str
    team: str
    status: str
    error: str
    prs: int


def connect_database() -> sqlite3.Connection | psycopg.Connection:
    """A plain DB-API connection to the demo database: this process watches the workers'
    writes from outside Django."""
    db = dj_database_url.parse(DATABASE_URL)
    if db["ENGINE"] == "django.db.backends.sqlite3":
        return sqlite3.connect(db["NAME"], timeout=30)
    return psycopg.connect(
        host=db["HOST"] or None,
        port=db["PORT"] or None,
        user=db["USER"] or None,
        password=db["PASSWORD"] or None,
        dbname=db["NAME"],
        autocommit=True,
        **db.get("OPTIONS", {}),
    )


def database_label() -> str:
    """Where the demo database is, without credentials."""
    db = dj_database_url.parse(DATABASE_URL)
    if db["ENGINE"] == "django.db.backends.sqlite3":
        return db["NAME"]
    return f"postgres://{db['HOST'] or 'localhost'}:{db['PORT'] or 5432}/{db['NAME']}"


def repo_states() -> dict[str, RepoState]:
    """Every tracked repository's sync state, read from the demo database."""
    with contextlib.closing(connect_database()) as db:
        rows = db.execute(
            "SELECT r.full_name, t.slug, r.sync_status, r.last_sync_error,"
            " (SELECT COUNT(*) FROM integrations_pullrequest p WHERE p.tracked_repo_id = r.id)"
            " FROM integrations_trackedrepository r JOIN teams_team t ON t.id = r.team_id"
            " ORDER BY r.full_name"
        ).fetchall()
    return {row[0].lower(): RepoState(*row) for row in rows}


def broker_busy(client: redis.Redis) -> bool:
    """Does the broker hold a sync message, queued, delayed or being processed?

    Dramatiq's Redis broker keeps every message in `<queue>.msgs` (and delayed ones in
    `<queue>.DQ.msgs`) until a worker acknowledges it, after its outcome is recorded.
    """
    return bool(client.hlen(f"dramatiq:{QUEUE}.msgs") or client.hlen(f"dramatiq:{QUEUE}.DQ.msgs"))


def run_round(env: dict[str, str], timeout: float) -> dict[str, set[str]]:
    """`scheduler --once`, then poll until the round is over, printing each status change.
    Returns the statuses seen per repository (lower-cased name)."""
    seen = {key: state.status for key, state in repo_states().items()}
    history: dict[str, set[str]] = {key: set() for key in seen}
    schedule_once(env)
    started = time.monotonic()
    with redis.Redis.from_url(env["REDIS_URL"]) as client:
        while True:
            states = repo_states()
            for key, state in states.items():
                if seen.get(key) != state.status:
                    seen[key] = state.status
                    history.setdefault(key, set()).add(state.status)
                    print_change(state, time.monotonic() - started)
            if not broker_busy(client) and not any(s.status in BUSY for s in states.values()):
                break
            if time.monotonic() - started > timeout:
                statuses = ", ".join(f"{s.full_name}={s.status}" for s in states.values())
                raise DemoFailed(
                    f"the syncs did not finish within {timeout:.0f}s ({statuses})\n{log_tail()}"
                )
            time.sleep(0.1)
    print(f"  done in {time.monotonic() - started:.1f}s")
    return history


def print_change(state: RepoState, elapsed: float) -> None:
    line = f"  {elapsed:5.1f}s  {state.full_name:<16} {state.status:<12} PRs stored: {state.prs}"
    if state.status == "rate_limited":
        line += f"\n{'':10}last_sync_error: {state.error!r}"
        until = re.search(r"until (\S+)", state.error)
        if until:
            wait = datetime.fromisoformat(until.group(1)) - datetime.now(UTC)
            line += (
                f"\n{'':10}the worker deferred the message to the reset, in "
                f"{max(wait.total_seconds(), 0):.0f}s; no worker thread waits for it"
            )
    elif state.status == "error":
        line += f"\n{'':10}last_sync_error: {state.error!r}"
    print(line)


# --------------------------------------------------------------------------- setup, report


def base_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="tformance.settings",
        DATABASE_URL=DATABASE_URL,
        SECRET_KEY=env.get("SECRET_KEY") or "demo-secret-key-not-for-production",
        FIELD_ENCRYPTION_KEY=env.get("FIELD_ENCRYPTION_KEY") or Fernet.generate_key().decode(),
        DEBUG="false",
    )
    return env


def prepare_database(env: dict[str, str]) -> None:
    shutil.rmtree(WORKDIR, ignore_errors=True)
    WORKDIR.mkdir()
    fresh = DATABASE_URL == f"sqlite:///{DATABASE}"
    if not fresh:
        # A database the demo did not create: an earlier demo's is emptied, anything else
        # is someone's data.
        others = stored_teams() - DEMO_TEAMS
        if others:
            raise DemoFailed(
                f"{database_label()} holds teams the demo did not make "
                f"({', '.join(sorted(others))}); give the demo a database of its own"
            )
    migrated = manage(env, "migrate", "--verbosity", "0")
    if migrated.returncode != 0:
        raise DemoFailed(f"migrate failed: {migrated.stderr.strip()}")
    if fresh:
        print(f"database: {DATABASE.relative_to(ROOT)} (fresh)")
        return
    flushed = manage(env, "flush", "--no-input", "--verbosity", "0")
    if flushed.returncode != 0:
        raise DemoFailed(f"flush failed: {flushed.stderr.strip()}")
    print(f"database: {database_label()} (DATABASE_URL, emptied)")


def stored_teams() -> set[str]:
    """The team slugs in the demo database; none before its first migration."""
    try:
        with contextlib.closing(connect_database()) as db:
            return {slug for (slug,) in db.execute("SELECT slug FROM teams_team").fetchall()}
    except (sqlite3.OperationalError, psycopg.errors.UndefinedTable):
        return set()
    except psycopg.OperationalError as exc:
        raise DemoFailed(f"cannot connect to {database_label()}: {exc}") from None


def track(env: dict[str, str], repos: list[Repo]) -> list[Repo]:
    """`track_repo` each repository; returns those now tracked."""
    tracked = []
    for repo in repos:
        result = manage(
            env, "track_repo", repo.full_name, "--team", repo.team, "--token-env", repo.token_env
        )
        if result.returncode == 0:
            print(f"track_repo {repo.full_name}: {result.stdout.strip()}")
            tracked.append(repo)
        else:  # the error is the last line; log lines may precede it
            error = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
            print(f"track_repo {repo.full_name}: exit {result.returncode}: {error}")
    return tracked


def print_table(columns: dict[str, list[str]]) -> None:
    """Columns by header; the counts ("PRs ...", "requests ...") are right-aligned."""
    headers = list(columns)
    rows = list(zip(*columns.values(), strict=True))
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    right = [h.startswith(("PRs", "requests")) for h in headers]

    def line(values) -> str:
        cells = [
            v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, right, strict=True)
        ]
        return "  ".join(cells).rstrip()

    print("\n" + line(headers))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line(row))


def summary_table(
    requests: dict[str, tuple[int, int]] | None = None, *, rounds: int = 2
) -> list[RepoState]:
    """Prints the summary; ``requests``: (full, incremental) per lower-cased repository name,
    the second shown only when ``rounds`` is 2."""
    states = list(repo_states().values())
    columns = {
        "repository": [s.full_name for s in states],
        "team": [s.team for s in states],
        "PRs stored": [str(s.prs) for s in states],
    }
    if requests:
        columns["requests (full)"] = [str(requests[s.full_name.lower()][0]) for s in states]
        if rounds == 2:
            columns["requests (incremental)"] = [
                str(requests[s.full_name.lower()][1]) for s in states
            ]
    columns["status"] = [s.status for s in states]
    columns["last error"] = [s.error or "-" for s in states]
    print_table(columns)
    return states


def check_outcome(states: list[RepoState], when: str = "") -> None:
    failed = [s.full_name for s in states if s.status != "idle"]
    if failed:
        raise DemoFailed(f"not synced{when}: {', '.join(failed)}\n{log_tail()}")


# --------------------------------------------------------------------------- the two modes


def start_services(stack: contextlib.ExitStack, env: dict[str, str], **extra: str) -> dict:
    """redis-server and the worker; returns the environment of the worker and scheduler."""
    redis_url = start_redis(stack)
    print(f"redis-server: {redis_url}")
    env = {**env, "REDIS_URL": redis_url, **extra}
    worker = start_worker(env, stack)
    print(
        f"worker: rundramatiq (pid {worker.pid}, 1 process x 4 threads), "
        f"log in {WORKER_LOG.relative_to(ROOT)}"
    )
    return env


def start_emulator(stack: contextlib.ExitStack) -> GitHubEmulator:
    rng = random.Random(20261127)  # noqa: S311 - demo data, not crypto
    emu = stack.enter_context(GitHubEmulator())
    emu.add_token(TOKENS["ACME_TOKEN"], login="acme-bot")
    emu.add_token(TOKENS["GLOBEX_TOKEN"], login="globex-bot")
    seed(emu, "acme/api", pulls=420, issues=160, rng=rng)
    seed(emu, "acme/web", pulls=180, issues=60, rng=rng)
    seed(emu, "globex/mobile", pulls=260, issues=90, rng=rng)
    print(f"GitHub emulator: {emu.api_url} (acme/api, acme/web, globex/mobile)")
    return emu


def emulated(stack: contextlib.ExitStack, timeout: float) -> None:
    emu = start_emulator(stack)
    env = base_env()
    env.update(GITHUB_API_URL=emu.api_url, **TOKENS)
    prepare_database(env)
    repos = [
        Repo("acme/api", "acme", "ACME_TOKEN"),
        Repo("acme/web", "acme", "ACME_TOKEN"),
        Repo("globex/mobile", "globex", "GLOBEX_TOKEN"),
    ]
    if len(track(env, repos)) != len(repos):
        raise DemoFailed("track_repo failed")
    # Deferred messages come back within 1 s of the reset (30 s by default). The per-token
    # pacing (GITHUB_TOKEN_MIN_INTERVAL_MS) keeps its production default.
    env = start_services(stack, env, GITHUB_RATE_LIMIT_JITTER_SECONDS="1")

    limit = RateLimitMidSync(emu, TOKENS["GLOBEX_TOKEN"], "globex/mobile", RESET_AFTER)
    emu.add_hook(limit)
    served = RequestLog()
    emu.add_hook(served)
    print(
        "\nround 1 - first sync (full, 90 days); globex's token will run out of rate limit "
        f"mid-sync, for {RESET_AFTER.seconds}s:"
    )
    seen = run_round(env, timeout)
    first = {r.full_name.lower(): served.count(r.full_name) for r in repos}
    if limit.reset_at and "rate_limited" in seen["globex/mobile"]:
        resumed = served.count("globex/mobile", since=limit.reset_at)
        print(
            f"  globex/mobile used {resumed} requests after the reset: it resumed from its "
            "checkpoint, not from the start"
        )
    else:
        print("  note: globex/mobile was not rate limited this time")
    if any(state.status != "idle" for state in repo_states().values()):
        states = summary_table({name: (first[name], 0) for name in first}, rounds=1)
        check_outcome(states, " in round 1")

    print("\nround 2 - three PRs per repository change on GitHub; incremental sync:")
    for repo in repos:
        edit_recent_pulls(emu, repo.full_name)
    mark = served.mark()
    run_round(env, timeout)
    second = {r.full_name.lower(): served.count(r.full_name, start=mark) for r in repos}

    check_outcome(summary_table({name: (first[name], second[name]) for name in first}))
    unattributed = served.count("(unattributed GraphQL)")
    if unattributed:
        print(f"(plus {unattributed} GraphQL requests the demo could not attribute)")
    print(
        "\nShown: one scheduler fan-out synced three repositories of two teams on one worker;\n"
        "globex ran out of rate limit mid-sync, was deferred (rate_limited) and resumed from its\n"
        "checkpoint after the reset; the incremental round cost a few requests per repository."
    )


def real_repositories(stack: contextlib.ExitStack, names: list[str], timeout: float) -> None:
    env = base_env()
    if not env.get("GITHUB_TOKEN"):
        raise DemoFailed("DEMO_REPOS needs GITHUB_TOKEN")
    print(f"GitHub: {env.get('GITHUB_API_URL') or 'https://api.github.com'}")
    prepare_database(env)
    if not track(env, [Repo(name, "demo") for name in names]):
        raise DemoFailed("no repository could be tracked")
    env = start_services(stack, env)
    print("\nsync (full, 90 days):")
    run_round(env, timeout)
    check_outcome(summary_table())


def interrupted(signum: int, frame: object) -> None:
    """Ctrl-C or SIGTERM: unwind once, so everything started is stopped. Later signals are
    ignored, or they would cut the clean-up short (`uv run` forwards the terminal's Ctrl-C to
    this process, which has already received it)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def main() -> int:
    signal.signal(signal.SIGINT, interrupted)
    signal.signal(signal.SIGTERM, interrupted)
    names = [r.strip() for r in os.environ.get("DEMO_REPOS", "").split(",") if r.strip()]
    timeout = float(os.environ.get("DEMO_TIMEOUT") or (600 if names else 120))
    started = datetime.now(UTC)
    try:
        with contextlib.ExitStack() as stack:
            if names:
                real_repositories(stack, names, timeout)
            else:
                emulated(stack, timeout)
    except DemoFailed as failure:
        print(f"\ndemo: {failure}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ndemo: interrupted; stopped the worker and redis-server", file=sys.stderr)
        return 130
    print(f"demo finished in {(datetime.now(UTC) - started).total_seconds():.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
