"""Contract tests of the GitHub emulator, over real loopback HTTP, with requests and PyGithub."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import github
import pytest
import requests

from devtools.github_emulator import GHOST_ID, GitHubEmulator

from .conftest import TOKEN, make_github

REPO = "acme/widgets"
T0 = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
ROOT = Path(__file__).resolve().parents[2]


def get(emu: GitHubEmulator, path: str, token: str | None = TOKEN, headers=None, **params):
    hdrs = dict(headers or {})
    if token is not None:
        hdrs["Authorization"] = f"token {token}"
    return requests.get(emu.api_url + path, params=params, headers=hdrs, timeout=10)


def numbers(response: requests.Response) -> list[int]:
    assert response.status_code == 200, response.text
    return [item["number"] for item in response.json()]


def links(response: requests.Response) -> dict[str, dict[str, list[str]]]:
    """rel -> query params of each Link entry."""
    out = {}
    for part in response.headers["Link"].split(", "):
        url, rel = part.split("; ")
        out[rel[5:-1]] = parse_qs(urlsplit(url[1:-1]).query)
    return out


# --------------------------------------------------------------------------- auth, users, repos


def test_user_endpoint_returns_token_login(emu: GitHubEmulator):
    body = get(emu, "/user").json()
    assert body["login"] == "octocat"
    assert body["type"] == "User"
    assert isinstance(body["id"], int)


def test_bearer_authorization_scheme_is_accepted(emu: GitHubEmulator):
    response = requests.get(
        emu.api_url + "/user", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
    )
    assert response.status_code == 200


def test_missing_or_unknown_token_is_401_bad_credentials(emu: GitHubEmulator):
    for token in (None, "nope"):
        response = get(emu, "/user", token=token)
        assert response.status_code == 401
        assert response.json() == {
            "message": "Bad credentials",
            "documentation_url": "https://docs.github.com/rest",
            "status": "401",
        }


def test_revoked_token_raises_pygithub_bad_credentials(emu: GitHubEmulator, gh: github.Github):
    assert gh.get_user().login == "octocat"
    emu.revoke_token(TOKEN)
    with pytest.raises(github.BadCredentialsException) as info:
        gh.get_user().login  # noqa: B018 - attribute access triggers the request
    assert info.value.status == 401


def test_unknown_repo_is_404_unknown_object(emu: GitHubEmulator, gh: github.Github):
    response = get(emu, "/repos/acme/nothing")
    assert response.status_code == 404
    assert response.json()["message"] == "Not Found"
    assert response.json()["status"] == "404"
    with pytest.raises(github.UnknownObjectException):
        gh.get_repo("acme/nothing")


def test_unknown_path_is_404(emu: GitHubEmulator):
    assert get(emu, "/repos/acme/widgets/commits").status_code == 404
    assert get(emu, "/nope").status_code == 404


def test_repo_lookup_is_case_insensitive_and_answers_canonical_name(
    emu: GitHubEmulator, gh: github.Github
):
    emu.add_repo("Octo-Org/Hello-World", private=True)
    repo = gh.get_repo("octo-org/HELLO-world")
    assert repo.full_name == "Octo-Org/Hello-World"
    assert repo.private is True
    assert repo.owner.login == "Octo-Org"
    assert repo.default_branch == "main"


def test_repo_json_urls_use_request_host(emu: GitHubEmulator):
    body = get(emu, "/repos/acme/widgets").json()
    assert body["url"] == f"{emu.api_url}/repos/acme/widgets"
    assert body["owner"]["url"].startswith(emu.api_url)
    assert body["node_id"] and body["id"] == emu.get_repo(REPO).id


# --------------------------------------------------------------------------- items


def test_issues_and_pulls_share_numbers_but_have_distinct_ids(emu: GitHubEmulator):
    pr = emu.add_pull(REPO)
    issue = emu.add_issue(REPO)
    pr2 = emu.add_pull(REPO)
    assert (pr.number, issue.number, pr2.number) == (1, 2, 3)
    assert pr.id != pr.issue_id
    assert get(emu, "/repos/acme/widgets/pulls/1").json()["id"] == pr.id
    assert get(emu, "/repos/acme/widgets/issues/1").json()["id"] == pr.issue_id
    assert get(emu, "/repos/acme/widgets/issues/2").json()["id"] == issue.id


def test_issue_list_marks_pulls_and_omits_key_for_plain_issues(emu: GitHubEmulator):
    emu.add_pull(REPO, draft=True)
    emu.add_issue(REPO)
    items = {i["number"]: i for i in get(emu, "/repos/acme/widgets/issues").json()}
    assert set(items[1]["pull_request"]) == {
        "url",
        "html_url",
        "diff_url",
        "patch_url",
        "merged_at",
    }
    assert items[1]["draft"] is True
    assert "pull_request" not in items[2]
    for key in ("id", "node_id", "title", "user", "state", "locked", "comments", "labels"):
        assert key in items[2]
    assert items[1]["pull_request"]["url"] == f"{emu.api_url}/repos/acme/widgets/pulls/1"


def test_pull_detail_has_full_fields(emu: GitHubEmulator, gh: github.Github):
    merged = T0 + timedelta(hours=3)
    emu.add_pull(
        REPO,
        title="Add widget",
        author="alice",
        created_at=T0,
        merged_at=merged,
        additions=10,
        deletions=2,
        changed_files=3,
        commits=4,
        head_ref="feature-x",
    )
    body = get(emu, "/repos/acme/widgets/pulls/1").json()
    assert body["state"] == "closed"
    assert body["merged"] is True
    assert body["merged_at"] == body["closed_at"] == "2024-01-01T15:00:00Z"
    assert (body["additions"], body["deletions"], body["changed_files"], body["commits"]) == (
        10,
        2,
        3,
        4,
    )
    assert body["head"]["ref"] == "feature-x" and body["base"]["ref"] == "main"
    assert body["base"]["repo"]["full_name"] == REPO
    assert body["issue_url"].endswith("/repos/acme/widgets/issues/1")
    pr = gh.get_repo(REPO).get_pull(1)
    assert pr.merged is True and pr.user.login == "alice" and pr.created_at == T0


def test_pull_list_items_omit_stats(emu: GitHubEmulator):
    emu.add_pull(REPO, additions=5)
    item = get(emu, "/repos/acme/widgets/pulls").json()[0]
    for key in ("additions", "deletions", "changed_files", "commits", "merged"):
        assert key not in item
    assert item["number"] == 1 and "merged_at" in item and "draft" in item


def test_pull_endpoint_is_404_for_plain_issue(emu: GitHubEmulator):
    emu.add_issue(REPO)
    assert get(emu, "/repos/acme/widgets/pulls/1").status_code == 404
    assert get(emu, "/repos/acme/widgets/pulls/99").status_code == 404
    assert get(emu, "/repos/acme/widgets/issues/1").status_code == 200


def test_deleted_author_renders_ghost_user(emu: GitHubEmulator, gh: github.Github):
    emu.add_pull(REPO, author=None)
    assert get(emu, "/repos/acme/widgets/pulls/1").json()["user"]["login"] == "ghost"
    user = gh.get_repo(REPO).get_pull(1).user
    assert (user.login, user.id) == ("ghost", GHOST_ID)


def test_timestamps_are_whole_second_utc_strings(emu: GitHubEmulator):
    emu.add_pull(REPO, created_at=T0.replace(microsecond=987654), state="closed")
    body = get(emu, "/repos/acme/widgets/pulls/1").json()
    assert body["created_at"] == "2024-01-01T12:00:00Z"
    for key in ("created_at", "updated_at", "closed_at"):
        assert TIMESTAMP.match(body[key]), body[key]


def test_update_changes_fields_and_defaults_updated_at_to_clock(emu: GitHubEmulator):
    emu.add_pull(REPO, created_at=T0)
    before = emu.now()
    record = emu.update(REPO, 1, title="Renamed", state="closed")
    assert before <= record.updated_at <= emu.now()
    assert emu.get(REPO, 1).title == "Renamed"
    assert emu.get(REPO, 1).closed_at == record.updated_at
    body = get(emu, "/repos/acme/widgets/issues/1").json()
    assert (body["title"], body["state"]) == ("Renamed", "closed")


# --------------------------------------------------------------------------- listing


def test_link_header_has_github_format_and_keeps_params(emu: GitHubEmulator):
    emu.generate_pulls(REPO, count=10, start=T0)
    first = get(emu, "/repos/acme/widgets/issues", state="all", per_page=2)
    assert first.headers["Link"] == (
        f'<{emu.api_url}/repos/acme/widgets/issues?state=all&per_page=2&page=2>; rel="next", '
        f'<{emu.api_url}/repos/acme/widgets/issues?state=all&per_page=2&page=5>; rel="last"'
    )
    middle = get(emu, "/repos/acme/widgets/issues", state="all", per_page=2, page=3)
    assert list(links(middle)) == ["prev", "next", "last", "first"]
    assert {rel: q["page"] for rel, q in links(middle).items()} == {
        "prev": ["2"],
        "next": ["4"],
        "last": ["5"],
        "first": ["1"],
    }
    last = get(emu, "/repos/acme/widgets/issues", state="all", per_page=2, page=5)
    assert list(links(last)) == ["prev", "first"]


def test_no_link_header_when_one_page(emu: GitHubEmulator):
    emu.generate_pulls(REPO, count=3)
    response = get(emu, "/repos/acme/widgets/pulls")
    assert "Link" not in response.headers
    assert len(response.json()) == 3


def test_page_past_the_end_is_empty_list(emu: GitHubEmulator):
    emu.generate_pulls(REPO, count=3)
    assert get(emu, "/repos/acme/widgets/pulls", per_page=2, page=9).json() == []


def test_default_per_page_is_30_and_max_is_100(emu: GitHubEmulator):
    emu.generate_pulls(REPO, count=150)
    assert len(get(emu, "/repos/acme/widgets/pulls").json()) == 30
    assert len(get(emu, "/repos/acme/widgets/pulls", per_page=500).json()) == 100


def test_pygithub_paginated_list_walks_every_page(emu: GitHubEmulator):
    emu.generate_pulls(REPO, count=95, start=T0)
    gh = make_github(emu.api_url, per_page=20)
    pulls = list(gh.get_repo(REPO).get_pulls(state="all", sort="created", direction="asc"))
    assert [p.number for p in pulls] == list(range(1, 96))
    assert emu.count_requests(path_contains="/pulls") == 5


def test_state_filter(emu: GitHubEmulator):
    emu.add_pull(REPO)
    emu.add_pull(REPO, state="closed")
    emu.add_pull(REPO, state="merged")
    assert numbers(get(emu, "/repos/acme/widgets/pulls")) == [1]
    assert numbers(get(emu, "/repos/acme/widgets/pulls", state="closed")) == [3, 2]
    assert numbers(get(emu, "/repos/acme/widgets/issues", state="all")) == [3, 2, 1]


def test_since_is_inclusive_on_updated_at(emu: GitHubEmulator, gh: github.Github):
    emu.generate_pulls(REPO, count=5, start=T0, step=timedelta(minutes=10))
    since = T0 + timedelta(minutes=20)  # exactly PR #3's updated_at
    response = get(emu, "/repos/acme/widgets/issues", since="2024-01-01T12:20:00Z", state="all")
    assert numbers(response) == [5, 4, 3]
    issues = gh.get_repo(REPO).get_issues(state="all", since=since, sort="updated")
    assert [i.number for i in issues] == [5, 4, 3]


def test_malformed_since_is_422(emu: GitHubEmulator):
    response = get(emu, "/repos/acme/widgets/issues", since="yesterday")
    assert response.status_code == 422
    assert response.json()["message"] == "Validation Failed"


def test_sort_updated_desc_breaks_ties_by_number_desc(emu: GitHubEmulator):
    emu.add_issue(REPO, created_at=T0, updated_at=T0 + timedelta(hours=1))
    emu.add_issue(REPO, created_at=T0, updated_at=T0 + timedelta(hours=2))
    emu.add_issue(REPO, created_at=T0, updated_at=T0 + timedelta(hours=1))
    url = "/repos/acme/widgets/issues"
    assert numbers(get(emu, url, sort="updated")) == [2, 3, 1]
    assert numbers(get(emu, url, sort="updated", direction="asc")) == [1, 3, 2]
    assert numbers(get(emu, url, sort="created", direction="asc")) == [1, 2, 3]


def test_pulls_sort_updated_defaults_to_ascending(emu: GitHubEmulator):
    emu.add_pull(REPO, created_at=T0, updated_at=T0 + timedelta(hours=2))
    emu.add_pull(REPO, created_at=T0, updated_at=T0 + timedelta(hours=1))
    assert numbers(get(emu, "/repos/acme/widgets/pulls", sort="updated")) == [2, 1]
    assert numbers(get(emu, "/repos/acme/widgets/pulls")) == [2, 1]  # created desc


def test_pulls_filter_by_base_and_head(emu: GitHubEmulator, gh: github.Github):
    emu.add_pull(REPO, base_ref="main", head_ref="a")
    emu.add_pull(REPO, base_ref="release", head_ref="b")
    assert numbers(get(emu, "/repos/acme/widgets/pulls", base="release")) == [2]
    assert [p.number for p in gh.get_repo(REPO).get_pulls(head="acme:a")] == [1]


def test_invalid_list_params_are_422(emu: GitHubEmulator):
    assert get(emu, "/repos/acme/widgets/issues", state="bogus").status_code == 422
    assert get(emu, "/repos/acme/widgets/pulls", sort="comments").status_code == 422
    assert get(emu, "/repos/acme/widgets/pulls", direction="up").status_code == 422


def test_deep_page_is_422(emu: GitHubEmulator, gh: github.Github):
    response = get(emu, "/repos/acme/widgets/pulls", per_page=100, page=101)
    assert response.status_code == 422
    assert response.json()["message"].startswith("Pagination with the page parameter")
    assert get(emu, "/repos/acme/widgets/pulls", per_page=100, page=100).status_code == 200
    with pytest.raises(github.GithubException) as info:
        gh.get_repo(REPO).get_pulls().get_page(334)  # (335-1) * 30 >= 10000
    assert info.value.status == 422


# --------------------------------------------------------------------------- rate limits


def test_counted_response_carries_rate_headers_and_decrements(emu: GitHubEmulator):
    first = get(emu, "/user")
    second = get(emu, "/repos/acme/widgets")
    assert first.headers["X-RateLimit-Limit"] == "5000"
    assert first.headers["X-RateLimit-Remaining"] == "4999"
    assert second.headers["X-RateLimit-Remaining"] == "4998"
    assert second.headers["X-RateLimit-Used"] == "2"
    assert second.headers["X-RateLimit-Resource"] == "core"
    assert int(second.headers["X-RateLimit-Reset"]) > emu.now().timestamp()


def test_primary_limit_raises_pygithub_rate_limit_exceeded_with_reset(
    emu: GitHubEmulator, gh: github.Github
):
    reset = emu.now() + timedelta(minutes=7)
    emu.set_rate_limit(TOKEN, remaining=1, reset_at=reset)
    gh.get_repo(REPO)
    with pytest.raises(github.RateLimitExceededException) as info:
        gh.get_repo(REPO)
    exc = info.value
    assert exc.status == 403
    assert exc.headers["x-ratelimit-remaining"] == "0"
    assert exc.headers["x-ratelimit-reset"] == str(int(reset.timestamp()))
    assert exc.data["message"].startswith("API rate limit exceeded for user ID")


def test_primary_limit_window_refills_after_reset(emu: GitHubEmulator):
    emu.set_rate_limit(TOKEN, remaining=0, reset_at=emu.now() + timedelta(seconds=60))
    assert get(emu, "/user").status_code == 403
    emu.advance(61)
    response = get(emu, "/user")
    assert response.status_code == 200
    assert response.headers["X-RateLimit-Remaining"] == "4999"


def test_rate_limit_endpoint_does_not_consume(emu: GitHubEmulator, gh: github.Github):
    emu.set_rate_limit(TOKEN, remaining=10)
    for _ in range(3):
        body = get(emu, "/rate_limit").json()
    assert body["resources"]["core"]["remaining"] == 10
    assert body["rate"]["remaining"] == 10
    assert set(body["resources"]) >= {"core", "graphql", "search"}
    assert gh.get_rate_limit().resources.core.remaining == 10


def test_secondary_limit_403_with_retry_after(emu: GitHubEmulator, gh: github.Github):
    emu.secondary_limit_next(status=403, retry_after=30)
    with pytest.raises(github.RateLimitExceededException) as info:
        gh.get_repo(REPO)
    exc = info.value
    assert exc.status == 403
    assert exc.headers["retry-after"] == "30"
    assert int(exc.headers["x-ratelimit-remaining"]) > 0
    assert exc.data["message"].startswith("You have exceeded a secondary rate limit")
    assert gh.get_repo(REPO).full_name == REPO  # only the next request was limited


def test_secondary_limit_429_is_plain_github_exception(emu: GitHubEmulator, gh: github.Github):
    emu.secondary_limit_next(status=429, retry_after=5)
    with pytest.raises(github.GithubException) as info:
        gh.get_repo(REPO)
    assert type(info.value) is github.GithubException  # PyGithub only maps 403 to RateLimit...
    assert info.value.status == 429
    assert info.value.headers["retry-after"] == "5"


def test_secondary_limit_without_retry_after_omits_header(emu: GitHubEmulator):
    emu.secondary_limit_next(retry_after=None)
    response = get(emu, "/user")
    assert response.status_code == 403
    assert "Retry-After" not in response.headers


def test_if_none_match_answers_304_without_consuming(emu: GitHubEmulator):
    first = get(emu, "/repos/acme/widgets")
    etag = first.headers["ETag"]
    assert etag.startswith('W/"')
    second = get(emu, "/repos/acme/widgets", headers={"If-None-Match": etag})
    assert second.status_code == 304
    assert second.content == b""
    assert second.headers["X-RateLimit-Remaining"] == first.headers["X-RateLimit-Remaining"]
    assert get(emu, "/user").headers["X-RateLimit-Remaining"] == "4998"


def test_pygithub_update_uses_etag_and_sees_changes(emu: GitHubEmulator, gh: github.Github):
    emu.add_pull(REPO, title="Before")
    pr = gh.get_repo(REPO).get_pull(1)
    assert pr.update() is False
    assert emu.requests[-1].status == 304
    emu.update(REPO, 1, title="After")
    assert pr.update() is True
    assert pr.title == "After"


# --------------------------------------------------------------------------- hooks, failures, log


def test_hook_change_is_visible_mid_listing(emu: GitHubEmulator):
    emu.generate_pulls(REPO, count=6, start=T0)

    def bump_first_pr_when_page_2_is_requested(req):
        if req.path.endswith("/issues") and req.query.get("page") == "2":
            emu.update(REPO, 1, updated_at=T0 + timedelta(days=1))

    emu.add_hook(bump_first_pr_when_page_2_is_requested)
    gh = make_github(emu.api_url, per_page=3)
    seen = [i.number for i in gh.get_repo(REPO).get_issues(sort="updated", direction="asc")]
    # Page 1 saw #1..#3; #1 then moved to the end, so page 2 shows #5, #6, #1 and #4 is skipped.
    assert seen == [1, 2, 3, 5, 6, 1]
    emu.remove_hook(bump_first_pr_when_page_2_is_requested)


def test_hook_receives_request_fields(emu: GitHubEmulator):
    seen = []
    emu.add_hook(seen.append)
    get(emu, "/repos/acme/widgets/issues", state="all")
    req = seen[0]
    assert (req.method, req.path, req.query, req.token) == (
        "GET",
        "/repos/acme/widgets/issues",
        {"state": "all"},
        TOKEN,
    )
    assert req.seq >= 1


def test_fail_next_injects_status_then_recovers(emu: GitHubEmulator, gh: github.Github):
    emu.fail_next(status=502, count=2, path_contains="/pulls")
    assert get(emu, "/user").status_code == 200  # not matching
    assert get(emu, "/repos/acme/widgets/pulls").status_code == 502
    with pytest.raises(github.GithubException) as info:
        list(gh.get_repo(REPO).get_pulls())
    assert info.value.status == 502
    assert get(emu, "/repos/acme/widgets/pulls").status_code == 200
    assert emu.count_requests(status=502) == 2


def test_request_log_records_final_status(emu: GitHubEmulator):
    emu.clear_requests()
    get(emu, "/user")
    get(emu, "/repos/acme/nope")
    get(emu, "/user", token="bad")
    assert [(r.path, r.status) for r in emu.requests] == [
        ("/user", 200),
        ("/repos/acme/nope", 404),
        ("/user", 401),
    ]
    assert emu.count_requests(path_contains="/user") == 2
    assert emu.count_requests(method="GET", status=401) == 1


def test_date_header_follows_emulator_clock(emu: GitHubEmulator):
    emu.advance(timedelta(days=2))
    before = emu.now()
    date = parsedate_to_datetime(get(emu, "/user").headers["Date"])
    assert before <= date <= emu.now()
    assert date > datetime.now(UTC) + timedelta(days=1)


def test_concurrent_requests_are_all_logged(emu: GitHubEmulator):
    emu.generate_pulls(REPO, count=50)

    def worker():
        for _ in range(10):
            assert get(emu, "/repos/acme/widgets/issues", per_page=10).status_code == 200

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert emu.count_requests() == 80
    assert get(emu, "/user").headers["X-RateLimit-Remaining"] == str(5000 - 81)


# --------------------------------------------------------------------------- prefix, CLI


def test_enterprise_prefix_works_with_pygithub():
    with GitHubEmulator(prefix="/api/v3") as emu:
        emu.add_token(TOKEN)
        emu.generate_pulls("Acme/Widgets", count=7, start=T0)
        assert emu.api_url == emu.url + "/api/v3"
        gh = make_github(emu.api_url, per_page=3)
        pulls = list(gh.get_repo("acme/widgets").get_pulls(state="all"))
        assert [p.number for p in pulls] == [7, 6, 5, 4, 3, 2, 1]
        assert all(r.path.startswith("/repos/") for r in emu.requests)
        unprefixed = requests.get(
            emu.url + "/user", headers={"Authorization": f"token {TOKEN}"}, timeout=10
        )
        assert unprefixed.status_code == 404


def test_cli_serves_until_sigterm():
    proc = subprocess.Popen(
        [sys.executable, "-m", "devtools.github_emulator", "--port", "0", "--token", "cli"]
        + ["--repo", "acme/cli", "--pulls", "5", "--issues", "2", "--prefix", "/api/v3"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        line = proc.stdout.readline()
        match = re.fullmatch(r"serving on (http://127\.0\.0\.1:\d+)\n", line)
        assert match, line
        response = requests.get(
            match[1] + "/api/v3/repos/acme/cli/issues",
            params={"state": "all"},
            headers={"Authorization": "token cli"},
            timeout=10,
        )
        assert len(response.json()) == 7
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
