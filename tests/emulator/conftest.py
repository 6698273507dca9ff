from __future__ import annotations

from collections.abc import Iterator

import github
import pytest

from devtools.github_emulator import GitHubEmulator

TOKEN = "emu-test-token"


@pytest.fixture
def emu() -> Iterator[GitHubEmulator]:
    """A running emulator with one valid token ``TOKEN`` (login octocat) and acme/widgets."""
    with GitHubEmulator() as emulator:
        emulator.add_token(TOKEN, login="octocat")
        emulator.add_repo("acme/widgets")
        yield emulator


def make_github(api_url: str, token: str = TOKEN, per_page: int = 30) -> github.Github:
    return github.Github(
        auth=github.Auth.Token(token),
        base_url=api_url,
        retry=None,
        seconds_between_requests=None,
        seconds_between_writes=None,
        per_page=per_page,
    )


@pytest.fixture
def gh(emu: GitHubEmulator) -> Iterator[github.Github]:
    client = make_github(emu.api_url)
    yield client
    client.close()
