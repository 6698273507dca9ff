"""CLI: ``python -m devtools.github_emulator --port 0 --token TOKEN [--repo o/r --pulls N]``.

Prints ``serving on http://127.0.0.1:PORT`` once ready and serves until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from datetime import timedelta

from .server import GitHubEmulator


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m devtools.github_emulator")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--token", action="append", default=[], help="valid token (repeatable)")
    parser.add_argument("--login", default="octocat", help="login of the token user(s)")
    parser.add_argument("--rate-limit", type=int, default=5000)
    parser.add_argument("--graphql-rate-limit", type=int, default=5000, help="points per hour")
    parser.add_argument("--repo", action="append", default=[], help="owner/name (repeatable)")
    parser.add_argument("--pulls", type=int, default=0, help="PRs to generate per repo")
    parser.add_argument("--issues", type=int, default=0, help="issues to generate per repo")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per request")
    parser.add_argument("--prefix", default="", help='e.g. "/api/v3" for GitHub Enterprise')
    return parser


def seed(emu: GitHubEmulator, repo: str, pulls: int, issues: int) -> None:
    """Repo with ``pulls`` PRs (a third each open, merged, closed) and ``issues`` issues."""
    emu.add_repo(repo)
    step = timedelta(minutes=5)
    start = emu.now() - step * (pulls + issues + 1) - timedelta(hours=1)  # updates in the past
    authors = ["alice", "bob", "carol", "dave", None]
    for i in range(pulls):
        created = start + step * i
        kind = i % 3
        emu.add_pull(
            repo,
            title=f"Change #{i + 1}",
            author=authors[i % len(authors)],
            created_at=created,
            updated_at=created + timedelta(minutes=30),
            state=("open", "merged", "closed")[kind],
            additions=10 + i % 97,
            deletions=i % 13,
            changed_files=1 + i % 7,
            commits=1 + i % 4,
            head_ref=f"feature-{i + 1}",
        )
    for i in range(issues):
        created = start + step * (pulls + i)
        emu.add_issue(
            repo,
            title=f"Issue #{i + 1}",
            author=authors[i % len(authors)],
            created_at=created,
            updated_at=created + timedelta(minutes=10),
            state="closed" if i % 2 else "open",
        )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    emu = GitHubEmulator(prefix=args.prefix, latency=args.latency, host=args.host)
    for token in args.token:
        emu.add_token(
            token,
            login=args.login,
            rate_limit=args.rate_limit,
            graphql_rate_limit=args.graphql_rate_limit,
        )
    for repo in args.repo:
        seed(emu, repo, args.pulls, args.issues)
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    emu.start(port=args.port)
    sys.stdout.write(f"serving on {emu.url}\n")
    sys.stdout.flush()
    try:
        while not stop.wait(0.5):
            pass
    finally:
        emu.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
