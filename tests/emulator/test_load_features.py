"""The emulator features the fleet load benchmark (``bench.load``) relies on: a short rate-limit
window, a seeded random share of 502 answers, and rate-limit refusals marked in the log."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from devtools.github_emulator import GitHubEmulator

from .conftest import TOKEN
from .test_graphql import fetch_pulls, make_github

REPO = "acme/widgets"


def get(emu: GitHubEmulator, path: str, token: str = TOKEN) -> requests.Response:
    return requests.get(emu.api_url + path, headers={"Authorization": f"token {token}"}, timeout=30)


@pytest.fixture
def short_window() -> Iterator[GitHubEmulator]:
    with GitHubEmulator(rate_window_seconds=60) as emulator:
        emulator.add_token(TOKEN, rate_limit=2)
        emulator.add_repo(REPO)
        yield emulator


def test_rate_limit_window_lasts_rate_window_seconds(short_window: GitHubEmulator):
    answer = get(short_window, f"/repos/{REPO}")

    reset = int(answer.headers["X-RateLimit-Reset"])
    assert reset - int(short_window.now().timestamp()) in (59, 60)


def test_token_that_ran_dry_recovers_after_the_short_window(short_window: GitHubEmulator):
    get(short_window, f"/repos/{REPO}")
    get(short_window, f"/repos/{REPO}")
    assert get(short_window, f"/repos/{REPO}").status_code == 403

    short_window.advance(61)

    assert get(short_window, f"/repos/{REPO}").status_code == 200


def test_primary_limit_refusal_is_marked_with_its_window(short_window: GitHubEmulator):
    get(short_window, f"/repos/{REPO}")
    get(short_window, f"/repos/{REPO}")

    refused = get(short_window, f"/repos/{REPO}")

    record = short_window.requests[-1]
    assert (record.status, record.rate_limited) == (403, "core")
    assert record.rate_limit_reset == int(refused.headers["X-RateLimit-Reset"])
    assert [r.rate_limited for r in short_window.requests[:-1]] == ["", ""]


def test_graphql_rate_limited_answer_is_marked_graphql(emu: GitHubEmulator):
    emu.add_pull(REPO)
    emu.set_graphql_rate_limit(TOKEN, remaining=0)
    gh = make_github(emu.api_url)

    fetch_pulls(gh, [1])

    record = emu.requests[-1]
    assert record.rate_limited == "graphql"
    assert record.rate_limit_reset == emu.token_state(TOKEN).graphql_reset


def statuses(emu: GitHubEmulator, count: int) -> list[int]:
    return [get(emu, f"/repos/{REPO}").status_code for _ in range(count)]


def test_error_rate_answers_that_share_502_before_authentication():
    with GitHubEmulator(error_rate=1.0) as emu:
        emu.add_repo(REPO)

        answer = get(emu, f"/repos/{REPO}", token="not-a-token")

        assert answer.status_code == 502
        assert emu.requests[-1].fault == "random_error"


def test_same_error_seed_fails_the_same_requests():
    runs = []
    for _ in range(2):
        with GitHubEmulator(error_rate=0.3, error_seed=7) as emu:
            emu.add_token(TOKEN)
            emu.add_repo(REPO)
            runs.append(statuses(emu, 40))

    assert runs[0] == runs[1]
    assert set(runs[0]) == {200, 502}


def test_error_rate_outside_zero_to_one_is_refused():
    with pytest.raises(ValueError, match="error_rate"):
        GitHubEmulator(error_rate=1.5)
