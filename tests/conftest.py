from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from apps.integrations.emulator import GitHubEmulator
from tests.builders import TOKEN


@pytest.fixture
def emulator(settings) -> Iterator[GitHubEmulator]:
    """A GitHub emulator on a loopback port, with one valid token; the project points at it."""
    with GitHubEmulator() as emu:
        emu.add_token(TOKEN, login="octocat")
        settings.GITHUB_API_URL = emu.api_url
        yield emu


@pytest.fixture
def now(emulator: GitHubEmulator) -> datetime:
    return emulator.now()


@pytest.fixture
def days_ago(now: datetime):
    def at(days: float) -> datetime:
        return (now - timedelta(days=days)).astimezone(UTC).replace(microsecond=0)

    return at
