"""Plausible pull-request fields for seeding the emulator (demo and benchmark)."""

from __future__ import annotations

import random
from typing import Any

# None is a deleted account: GitHub shows it as "ghost".
AUTHORS = ["alice", "bob", "carol", "dave", "erin", "frank", None]


def realistic_pull_fields(rng: random.Random, index: int) -> dict[str, Any]:
    """Title, author, draft/merged/closed/open state and diff size of a plausible PR."""
    fate = rng.random()
    return {
        "title": f"{rng.choice(['Fix', 'Add', 'Refactor', 'Bump', 'Document'])} "
        f"{rng.choice(['login', 'billing', 'search', 'CI', 'caching', 'exports'])} #{index}",
        "author": rng.choice(AUTHORS),
        "draft": fate < 0.08,
        "state": "merged" if fate > 0.35 else ("closed" if fate > 0.25 else "open"),
        "additions": rng.randint(1, 800),
        "deletions": rng.randint(0, 400),
        "changed_files": rng.randint(1, 40),
        "commits": rng.randint(1, 12),
    }
