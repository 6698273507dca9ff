"""`make demo`: the main job end to end, on embedded defaults.

Starts the GitHub emulator seeded with a few realistic repositories, a fresh SQLite database
under .demo/, tracks the repositories with `manage.py track_repo` and syncs them with
`manage.py sync_repo` as separate processes, exactly as an operator would. One team's token
runs out of rate limit mid-sync: the demo shows the exit code 75 and the deferral, moves the
emulator's clock past the reset, and shows the sync resuming from its checkpoint. Then a few
PRs are edited and an incremental sync fetches just those. Prints a summary table.

With DEMO_REPOS=owner/a,owner/b (and GITHUB_TOKEN) it tracks and syncs those real
repositories from GITHUB_API_URL instead.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from cryptography.fernet import Fernet

from apps.integrations.emulator import GitHubEmulator

ROOT = Path(__file__).resolve().parent.parent
WORKDIR = ROOT / ".demo"
AUTHORS = ["alice", "bob", "carol", "dave", "erin", "frank", None]  # None: a deleted account


@dataclass
class RepoRun:
    full_name: str
    team: str
    token_env: str
    requests: int = 0
    notes: list[str] = field(default_factory=list)


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
        fate = rng.random()
        emu.add_pull(
            full_name,
            title=f"{rng.choice(['Fix', 'Add', 'Refactor', 'Bump', 'Document'])} "
            f"{rng.choice(['login', 'billing', 'search', 'CI', 'caching', 'exports'])} #{i}",
            author=rng.choice(AUTHORS),
            created_at=created,
            updated_at=updated,
            draft=fate < 0.08,
            state="merged" if fate > 0.35 else ("closed" if fate > 0.25 else "open"),
            additions=rng.randint(1, 800),
            deletions=rng.randint(0, 400),
            changed_files=rng.randint(1, 40),
            commits=rng.randint(1, 12),
        )


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def requests_from(summary: str) -> int:
    match = re.search(r"(\d+) requests", summary)
    return int(match.group(1)) if match else 0


def sync(env: dict[str, str], run: RepoRun) -> subprocess.CompletedProcess[str]:
    result = manage(env, "sync_repo", run.full_name, "--team", run.team)
    run.requests += requests_from(result.stdout)
    if result.returncode == 0:
        print(f"  {result.stdout.strip()}")
    else:
        print(f"  exit {result.returncode}: {result.stderr.strip().splitlines()[-1]}")
    return result


def table(database: Path, runs: list[RepoRun]) -> None:
    with sqlite3.connect(database) as db:
        rows = db.execute(
            "SELECT r.full_name, t.slug, r.sync_status, r.last_sync_error,"
            " (SELECT COUNT(*) FROM integrations_pullrequest p WHERE p.tracked_repo_id = r.id)"
            " FROM integrations_trackedrepository r JOIN teams_team t ON t.id = r.team_id"
            " ORDER BY r.full_name"
        ).fetchall()
    by_name = {run.full_name.lower(): run for run in runs}
    header = f"{'repository':<20} {'team':<8} {'PRs':>5} {'requests':>9} {'status':<13} last error"
    print("\n" + header)
    print("-" * len(header))
    for full_name, team, status, error, prs in rows:
        run = by_name.get(full_name.lower())
        used = run.requests if run else 0
        print(f"{full_name:<20} {team:<8} {prs:>5} {used:>9} {status:<13} {error or '-'}")


def base_env(database: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="tformance.settings",
        DATABASE_URL=f"sqlite:///{database}",
        SECRET_KEY=env.get("SECRET_KEY") or "demo-secret-key-not-for-production",
        FIELD_ENCRYPTION_KEY=env.get("FIELD_ENCRYPTION_KEY") or Fernet.generate_key().decode(),
        DEBUG="false",
    )
    return env


def prepare(database: Path, env: dict[str, str]) -> None:
    shutil.rmtree(WORKDIR, ignore_errors=True)
    WORKDIR.mkdir()
    migrated = manage(env, "migrate", "--verbosity", "0")
    if migrated.returncode != 0:
        sys.exit(f"demo: migrate failed: {migrated.stderr.strip()}")
    print(f"database: {database}")


def real_repositories(repos: list[str]) -> None:
    database = WORKDIR / "demo.sqlite3"
    env = base_env(database)
    if not env.get("GITHUB_TOKEN"):
        sys.exit("demo: DEMO_REPOS needs GITHUB_TOKEN")
    prepare(database, env)
    print(f"GitHub: {env.get('GITHUB_API_URL') or 'https://api.github.com'}")
    runs = [RepoRun(name, "demo", "GITHUB_TOKEN") for name in repos]
    for run in runs:
        tracked = manage(env, "track_repo", run.full_name, "--team", run.team)
        if tracked.returncode != 0:
            print(f"{run.full_name}: {tracked.stderr.strip()}")
            continue
        print(f"{run.full_name}: syncing")
        sync(env, run)
    table(database, runs)


def emulated() -> None:
    database = WORKDIR / "demo.sqlite3"
    rng = random.Random(20261127)  # noqa: S311 - demo data, not crypto
    with GitHubEmulator() as emu:
        emu.add_token("ghp_demoacme000000000000000000000000001", login="acme-bot")
        emu.add_token("ghp_demoglobex0000000000000000000000002", login="globex-bot")
        seed(emu, "acme/api", pulls=420, issues=160, rng=rng)
        seed(emu, "acme/web", pulls=180, issues=60, rng=rng)
        seed(emu, "globex/mobile", pulls=260, issues=90, rng=rng)
        env = base_env(database)
        env.update(
            GITHUB_API_URL=emu.api_url,
            GITHUB_SECONDS_BETWEEN_REQUESTS="0",
            ACME_TOKEN="ghp_demoacme000000000000000000000000001",
            GLOBEX_TOKEN="ghp_demoglobex0000000000000000000000002",
        )
        prepare(database, env)
        print(f"GitHub emulator: {emu.api_url}")
        runs = [
            RepoRun("acme/api", "acme", "ACME_TOKEN"),
            RepoRun("acme/web", "acme", "ACME_TOKEN"),
            RepoRun("globex/mobile", "globex", "GLOBEX_TOKEN"),
        ]
        for run in runs:
            tracked = manage(
                env, "track_repo", run.full_name, "--team", run.team, "--token-env", run.token_env
            )
            print(f"{run.full_name}: {(tracked.stdout or tracked.stderr).strip()}")

        # globex's token has only 150 requests left this hour.
        reset_at = emu.now() + timedelta(minutes=45)
        emu.set_rate_limit(env["GLOBEX_TOKEN"], remaining=150, reset_at=reset_at)

        print("\nfirst sync (full, 90 days):")
        for run in runs:
            result = sync(env, run)
            if result.returncode == 75:
                print(f"  {run.full_name}: deferred until the reset; progress is checkpointed")

        print("\n... the emulator's clock moves past globex's rate-limit reset ...")
        emu.advance((reset_at - emu.now()).total_seconds() + 1)
        sync(env, runs[2])

        print("\nsome PRs change on GitHub, then an incremental sync of everything:")
        for run in runs:
            items = [i for i in emu.items(run.full_name) if i.is_pull][-5:]
            for item in items[:3]:
                emu.update(run.full_name, item.number, title=item.title + " (edited)")
        for run in runs:
            sync(env, run)
        # Count what GitHub actually served per repository (a sync cut short by a rate limit
        # prints no summary, but its requests still count against the token).
        for run in runs:
            prefix = f"/repos/{run.full_name}".lower()
            run.requests = sum(1 for r in emu.requests if r.path.lower().startswith(prefix))
        table(database, runs)
    print(f"\nthe emulator served {len(emu.requests)} requests in all (tracking included).")


def main() -> None:
    repos = [r.strip() for r in os.environ.get("DEMO_REPOS", "").split(",") if r.strip()]
    if repos:
        real_repositories(repos)
    else:
        emulated()


if __name__ == "__main__":
    main()
