"""Contract tests of the emulator's GraphQL endpoint, over real HTTP with PyGithub's requester."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import github
import pytest
import requests

from apps.integrations.services.github_client import pull_details_query
from devtools.github_emulator import GitHubEmulator

from .conftest import TOKEN, make_github

REPO = "acme/widgets"


def pulls_query(numbers: list[int]) -> str:
    """The query the sync sends (the client's own builder, so the two cannot drift)."""
    return pull_details_query(numbers)


def post_graphql(
    gh: github.Github, query: str, variables: dict[str, Any] | None = None
) -> tuple[int, dict[str, str], dict[str, Any]]:
    requester = gh.requester
    status, headers, text = requester.requestJson(
        "POST", requester.graphql_url, input={"query": query, "variables": variables or {}}
    )
    return status, headers, json.loads(text)


def with_rate_limit(query: str) -> str:
    """``query`` also asking for GitHub's ``rateLimit`` object, which the client does not read."""
    rate_limit = "rateLimit { cost remaining resetAt limit used nodeCount }"
    return query.replace("{\n", f"{{\n  {rate_limit}\n", 1)


def fetch_pulls(
    gh: github.Github, numbers: list[int], repo: str = REPO, rate_limit: bool = False
) -> tuple[int, dict[str, str], dict[str, Any]]:
    owner, name = repo.split("/")
    query = with_rate_limit(pulls_query(numbers)) if rate_limit else pulls_query(numbers)
    return post_graphql(gh, query, {"owner": owner, "name": name})


def rest_pull(gh: github.Github, number: int) -> dict[str, Any]:
    status, _, text = gh.requester.requestJson("GET", f"/repos/{REPO}/pulls/{number}")
    assert status == 200
    return json.loads(text)


def test_pull_data_equals_the_rest_pull_of_the_same_number(emu: GitHubEmulator, gh: github.Github):
    emu.add_pull(REPO, author=None, state="merged", additions=7, deletions=3, commits=4)
    emu.add_pull(REPO, author="alice", draft=True, changed_files=2, head_ref="wip")
    emu.add_pull(REPO, author="bob", state="closed", base_ref="release")

    status, _, body = fetch_pulls(gh, [1, 2, 3])

    assert status == 200
    assert "errors" not in body
    nodes = body["data"]["repository"]
    for number, expected_state in ((1, "MERGED"), (2, "OPEN"), (3, "CLOSED")):
        rest = rest_pull(gh, number)
        author = None if rest["user"]["login"] == "ghost" else {"login": rest["user"]["login"]}
        assert nodes[f"pr{number}"] == {
            "databaseId": rest["id"],
            "number": number,
            "title": rest["title"],
            "state": expected_state,
            "isDraft": rest["draft"],
            "createdAt": rest["created_at"],
            "updatedAt": rest["updated_at"],
            "closedAt": rest["closed_at"],
            "mergedAt": rest["merged_at"],
            "additions": rest["additions"],
            "deletions": rest["deletions"],
            "changedFiles": rest["changed_files"],
            "commits": {"totalCount": rest["commits"]},
            "baseRefName": rest["base"]["ref"],
            "headRefName": rest["head"]["ref"],
            "url": rest["html_url"],
            "author": author,
        }
    assert nodes["pr1"]["author"] is None  # deleted account: null, not the REST "ghost" user
    assert nodes["pr2"]["isDraft"] is True


def test_hundred_aliases_cost_one_graphql_point_and_no_rest_budget(
    emu: GitHubEmulator, gh: github.Github
):
    emu.generate_pulls(REPO, count=100)

    status, headers, body = fetch_pulls(gh, list(range(1, 101)), rate_limit=True)

    assert status == 200
    assert len(body["data"]["repository"]) == 100
    rate = body["data"]["rateLimit"]
    assert (rate["cost"], rate["remaining"], rate["limit"], rate["used"]) == (1, 4999, 5000, 1)
    assert set(rate) == {"cost", "remaining", "resetAt", "limit", "used", "nodeCount"}
    assert headers["x-ratelimit-resource"] == "graphql"
    assert headers["x-ratelimit-remaining"] == "4999"
    assert headers["x-ratelimit-used"] == "1"
    record = emu.requests[-1]
    assert (record.method, record.path, record.graphql_cost) == ("POST", "/graphql", 1)
    assert record.graphql_numbers == list(range(1, 101))
    assert gh.get_rate_limit().resources.core.remaining == 5000


def test_missing_alias_is_null_with_not_found_error_while_others_keep_data(
    emu: GitHubEmulator, gh: github.Github
):
    emu.add_pull(REPO)
    emu.add_issue(REPO)  # #2 is a plain issue, not a pull request
    emu.add_pull(REPO)

    status, _, body = fetch_pulls(gh, [1, 2, 3, 99])

    assert status == 200
    nodes = body["data"]["repository"]
    assert nodes["pr1"]["number"] == 1
    assert nodes["pr3"]["number"] == 3
    assert nodes["pr2"] is None
    assert nodes["pr99"] is None
    assert [(e["type"], e["path"], e["message"]) for e in body["errors"]] == [
        (
            "NOT_FOUND",
            ["repository", "pr2"],
            "Could not resolve to a PullRequest with the number of 2.",
        ),
        (
            "NOT_FOUND",
            ["repository", "pr99"],
            "Could not resolve to a PullRequest with the number of 99.",
        ),
    ]
    assert body["errors"][0]["locations"] == [{"line": 4, "column": 5}]


def test_unknown_repository_is_null_with_not_found_error(emu: GitHubEmulator, gh: github.Github):
    status, _, body = fetch_pulls(gh, [1], repo="acme/nothing", rate_limit=True)

    assert status == 200
    assert body["data"]["repository"] is None
    assert body["data"]["rateLimit"]["cost"] == 1
    assert [(e["type"], e["path"]) for e in body["errors"]] == [("NOT_FOUND", ["repository"])]


def test_spent_graphql_budget_answers_rate_limited_while_rest_still_works(
    emu: GitHubEmulator, gh: github.Github
):
    reset = emu.now() + timedelta(minutes=9)
    emu.set_graphql_rate_limit(TOKEN, remaining=0, reset_at=reset)
    emu.add_pull(REPO)

    status, headers, body = fetch_pulls(gh, [1])

    assert status == 200
    assert body == {
        "data": None,
        "errors": [
            {
                "type": "RATE_LIMITED",
                "message": f"API rate limit exceeded for user ID {gh.get_user().id}.",
            }
        ],
    }
    assert headers["x-ratelimit-remaining"] == "0"
    assert headers["x-ratelimit-reset"] == str(int(reset.timestamp()))
    assert headers["x-ratelimit-resource"] == "graphql"
    assert emu.requests[-2].graphql_cost == 0
    assert gh.get_repo(REPO).get_pull(1).number == 1


def test_graphql_budget_refills_after_its_reset(emu: GitHubEmulator, gh: github.Github):
    emu.set_graphql_rate_limit(TOKEN, remaining=0, reset_at=emu.now() + timedelta(seconds=30))
    emu.add_pull(REPO)
    assert fetch_pulls(gh, [1])[2]["errors"][0]["type"] == "RATE_LIMITED"

    emu.advance(31)
    _, headers, body = fetch_pulls(gh, [1])

    assert body["data"]["repository"]["pr1"]["number"] == 1
    assert headers["x-ratelimit-remaining"] == "4999"


def test_rate_limit_endpoint_reports_the_graphql_budget(emu: GitHubEmulator, gh: github.Github):
    emu.set_graphql_rate_limit(TOKEN, remaining=42, limit=100)

    graphql = gh.get_rate_limit().resources.graphql

    assert (graphql.limit, graphql.remaining, graphql.used) == (100, 42, 58)
    assert gh.get_rate_limit().resources.core.remaining == 5000


def test_enterprise_prefix_serves_graphql_at_api_graphql():
    with GitHubEmulator(prefix="/api/v3") as emu:
        emu.add_token(TOKEN)
        emu.add_pull(REPO)
        gh = make_github(emu.api_url)
        assert gh.requester.graphql_url == emu.url + "/api/graphql" == emu.graphql_url

        status, _, body = fetch_pulls(gh, [1])

        assert status == 200
        assert body["data"]["repository"]["pr1"]["url"] == f"{emu.url}/{REPO}/pull/1"
        assert emu.requests[-1].path == "/graphql"
        wrong = requests.post(
            emu.url + "/api/v3/graphql",
            json={"query": pulls_query([1])},
            headers={"Authorization": f"token {TOKEN}"},
            timeout=10,
        )
        assert wrong.status_code == 404


def test_bad_token_is_401_bad_credentials(emu: GitHubEmulator):
    gh = make_github(emu.api_url, token="nope")

    status, headers, body = fetch_pulls(gh, [1])

    assert status == 401
    assert body == {
        "message": "Bad credentials",
        "documentation_url": "https://docs.github.com/rest",
        "status": "401",
    }
    assert "x-ratelimit-remaining" not in headers


def test_secondary_limit_injection_applies_to_graphql(emu: GitHubEmulator, gh: github.Github):
    emu.add_pull(REPO)
    emu.secondary_limit_next(status=403, retry_after=45, path_contains="/graphql")

    status, headers, body = fetch_pulls(gh, [1])

    assert status == 403
    assert headers["retry-after"] == "45"
    assert headers["x-ratelimit-resource"] == "graphql"
    assert body["message"].startswith("You have exceeded a secondary rate limit")
    assert fetch_pulls(gh, [1])[0] == 200  # only the next request was limited
    assert gh.get_rate_limit().resources.graphql.remaining == 4999  # the 403 was not charged


def test_fail_next_injection_applies_to_graphql(emu: GitHubEmulator, gh: github.Github):
    emu.fail_next(status=502, path_contains="/graphql")

    status, _, body = fetch_pulls(gh, [1])

    assert status == 502
    assert body["message"] == "Bad Gateway"
    assert emu.count_requests(path_contains="/graphql", status=502) == 1


def test_hook_sees_requested_numbers_before_the_answer(emu: GitHubEmulator, gh: github.Github):
    emu.add_pull(REPO, title="Before")
    seen = []

    def rename_when_fetched(req):
        seen.append(list(req.graphql_numbers))
        if 1 in req.graphql_numbers:
            emu.update(REPO, 1, title="After")

    emu.add_hook(rename_when_fetched)

    _, _, body = fetch_pulls(gh, [1])

    assert seen == [[1]]
    assert body["data"]["repository"]["pr1"]["title"] == "After"


def test_malformed_body_is_400_problems_parsing_json(emu: GitHubEmulator):
    for payload in (b"{not json", b'{"variables": {}}', b'{"query": 5}'):
        response = requests.post(
            emu.graphql_url,
            data=payload,
            headers={"Authorization": f"token {TOKEN}"},
            timeout=10,
        )
        assert response.status_code == 400
        assert response.json()["message"] == "Problems parsing JSON"


def test_syntax_error_is_200_with_parse_error_and_no_charge(emu: GitHubEmulator, gh: github.Github):
    status, headers, body = post_graphql(gh, "query { rateLimit { cost } } }")

    assert status == 200
    assert body == {
        "errors": [
            {
                "locations": [{"line": 1, "column": 30}],
                "message": 'Parse error on "}" (RCURLY) at [1, 30]',
            }
        ]
    }
    assert headers["x-ratelimit-remaining"] == "5000"


def test_truncated_document_is_unexpected_end_of_document_without_location(
    emu: GitHubEmulator, gh: github.Github
):
    for truncated in ("query { rateLimit { cost } ", ""):
        status, headers, body = post_graphql(gh, truncated)

        assert status == 200
        assert body == {"errors": [{"message": "Unexpected end of document"}]}
        assert headers["x-ratelimit-remaining"] == "5000"


def test_empty_selection_is_a_parse_error(emu: GitHubEmulator, gh: github.Github):
    _, _, body = post_graphql(gh, "query { viewer { } }")

    assert body["errors"][0]["message"] == 'Parse error on "}" (RCURLY) at [1, 18]'


def test_unknown_field_is_a_validation_error_without_data(emu: GitHubEmulator, gh: github.Github):
    query = pulls_query([1]).replace("mergedAt", "mergedAt mergeable")

    status, _, body = post_graphql(gh, query, {"owner": "acme", "name": "widgets"})

    assert status == 200
    assert "data" not in body
    assert body["errors"][0]["message"] == "Field 'mergeable' doesn't exist on type 'PullRequest'"


def test_unknown_field_in_a_fragment_has_the_fragment_path(emu: GitHubEmulator, gh: github.Github):
    query = pulls_query([1, 2]).replace("mergedAt", "mergedAt mergeable")

    _, _, body = post_graphql(gh, query, {"owner": "acme", "name": "widgets"})

    assert body["errors"] == [
        {
            "path": ["fragment PullRequestDetail", "mergeable"],
            "extensions": {
                "code": "undefinedField",
                "typeName": "PullRequest",
                "fieldName": "mergeable",
            },
            "locations": [{"line": 8, "column": 79}],  # reported once, not per alias
            "message": "Field 'mergeable' doesn't exist on type 'PullRequest'",
        }
    ]


def test_other_validation_errors_are_200_without_data_or_charge(
    emu: GitHubEmulator, gh: github.Github
):
    for query in ("query { viewer }", "query($x: Int) { viewer { login } }", "mutation { x }"):
        status, headers, body = post_graphql(gh, query)

        assert status == 200
        assert set(body) == {"errors"}
        assert body["errors"][0]["message"] and body["errors"][0]["locations"]
        assert headers["x-ratelimit-remaining"] == "5000"


def test_author_fields_of_a_user_fragment_are_served(emu: GitHubEmulator, gh: github.Github):
    emu.add_pull(REPO, author="alice")
    query = """{ repository(owner: "acme", name: "widgets") { pullRequest(number: 1) {
        author { __typename login ... on User { databaseId } } } } }"""

    _, _, body = post_graphql(gh, query)

    author = body["data"]["repository"]["pullRequest"]["author"]
    assert author == {
        "__typename": "User",
        "login": "alice",
        "databaseId": emu.user_for("alice").id,
    }


def test_missing_variable_is_reported(emu: GitHubEmulator, gh: github.Github):
    status, _, body = post_graphql(gh, pulls_query([1]), {"owner": "acme"})

    assert status == 200
    assert body["errors"][0]["message"] == (
        "Variable $name of type String! was provided invalid value"
    )
    assert body["errors"][0]["extensions"]["value"] is None
    assert "data" not in body


def test_pygithub_graphql_query_loses_all_data_on_one_missing_alias(
    emu: GitHubEmulator, gh: github.Github
):
    """Why the sync reads partial answers itself instead of using ``graphql_query``."""
    emu.add_pull(REPO)

    with pytest.raises(github.UnknownObjectException) as info:
        gh.requester.graphql_query(pulls_query([1, 2]), {"owner": "acme", "name": "widgets"})
    assert info.value.status == 404
