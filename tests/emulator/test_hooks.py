"""The emulator's repository webhooks: the hooks API, signed deliveries, the deliveries log
and redelivery, over real HTTP."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from datetime import timedelta

import pytest
import requests

from devtools.github_emulator import GitHubEmulator
from tests.emulator.conftest import TOKEN
from tests.webhooks.stub_receiver import StubReceiver

REPO = "acme/widgets"
SECRET = "It's a Secret to Everybody"


@pytest.fixture
def receiver() -> Iterator[StubReceiver]:
    with StubReceiver() as stub:
        yield stub


def call(emu: GitHubEmulator, method: str, path: str, body=None, token: str = TOKEN, **params):
    return requests.request(
        method,
        f"{emu.api_url}{path}",
        json=body,
        params=params or None,
        headers={"Authorization": f"token {token}"},
        timeout=10,
    )


def create_hook(emu: GitHubEmulator, url: str, events=("pull_request", "repository"), **extra):
    config = {"url": url, "content_type": "json", "secret": SECRET, "insecure_ssl": "0"}
    response = call(
        emu, "POST", f"/repos/{REPO}/hooks", {"config": config, "events": list(events), **extra}
    )
    assert response.status_code == 201, response.text
    return response.json()


def test_created_hook_is_listed_with_its_secret_masked(emu):
    created = create_hook(emu, "https://example.com/hook")

    listed = call(emu, "GET", f"/repos/{REPO}/hooks").json()

    assert [hook["id"] for hook in listed] == [created["id"]]
    assert listed[0]["config"] == {
        "url": "https://example.com/hook",
        "content_type": "json",
        "insecure_ssl": "0",
        "secret": "********",
    }
    assert listed[0]["events"] == ["pull_request", "repository"] and listed[0]["active"]


def test_a_second_hook_with_the_same_url_is_refused_with_422(emu):
    create_hook(emu, "https://example.com/hook")

    response = call(
        emu, "POST", f"/repos/{REPO}/hooks", {"config": {"url": "https://example.com/hook"}}
    )

    assert response.status_code == 422
    assert response.json()["errors"][0]["message"] == "Hook already exists on this repository"


def test_patch_with_a_config_replaces_it_and_a_secret_left_out_is_removed(emu):
    hook = create_hook(emu, "https://example.com/hook")

    response = call(
        emu, "PATCH", f"/repos/{REPO}/hooks/{hook['id']}", {"config": {"url": "https://x.test/"}}
    )

    assert response.status_code == 200
    assert "secret" not in response.json()["config"]
    assert emu.webhooks.hooks(REPO)[0].secret == ""


def test_deleted_hook_answers_404(emu):
    hook = create_hook(emu, "https://example.com/hook")

    assert call(emu, "DELETE", f"/repos/{REPO}/hooks/{hook['id']}").status_code == 204
    assert call(emu, "GET", f"/repos/{REPO}/hooks/{hook['id']}").status_code == 404


def test_classic_token_without_the_hook_scope_gets_404_naming_the_accepted_scopes(emu):
    emu.webhooks.deny_hook_permission(TOKEN, "classic")

    response = call(emu, "GET", f"/repos/{REPO}/hooks")

    assert (response.status_code, response.json()["message"]) == (404, "Not Found")
    assert "admin:repo_hook" in response.headers["X-Accepted-OAuth-Scopes"]


def test_fine_grained_token_without_the_webhooks_permission_gets_403(emu):
    emu.webhooks.deny_hook_permission(TOKEN, "fine_grained")

    response = call(emu, "POST", f"/repos/{REPO}/hooks", {"config": {"url": "https://x.test/"}})

    assert response.status_code == 403
    assert response.json()["message"] == "Resource not accessible by personal access token"


def test_hook_requests_count_against_the_rate_limit(emu):
    before = int(call(emu, "GET", "/rate_limit").json()["rate"]["remaining"])

    call(emu, "GET", f"/repos/{REPO}/hooks")
    response = call(emu, "GET", f"/repos/{REPO}/hooks")

    assert int(response.headers["X-RateLimit-Remaining"]) == before - 2


def test_added_pull_request_is_delivered_signed_to_the_hook(emu, receiver):
    hook = create_hook(emu, receiver.url)

    pull = emu.add_pull(REPO, title="Fix the widget")
    emu.webhooks.wait_idle()

    [received] = receiver.received
    headers = received.headers
    assert headers["x-github-event"] == "pull_request"
    assert headers["x-github-hook-id"] == str(hook["id"])
    assert headers["user-agent"].startswith("GitHub-Hookshot/")
    expected = hmac.new(SECRET.encode(), received.body, hashlib.sha256).hexdigest()
    assert headers["x-hub-signature-256"] == f"sha256={expected}"
    payload = json.loads(received.body)
    assert (payload["action"], payload["number"]) == ("opened", pull.number)
    assert payload["pull_request"]["title"] == "Fix the widget"
    assert payload["pull_request"]["additions"] == pull.additions
    assert payload["repository"]["full_name"] == REPO


def test_closing_a_pull_request_delivers_action_closed(emu, receiver):
    create_hook(emu, receiver.url)
    pull = emu.add_pull(REPO)

    emu.update(REPO, pull.number, state="closed")
    emu.webhooks.wait_idle()

    actions = [json.loads(r.body)["action"] for r in receiver.received]
    assert actions == ["opened", "closed"]


def test_renaming_the_repository_delivers_repository_renamed(emu, receiver):
    create_hook(emu, receiver.url)

    emu.rename_repo(REPO, "gadgets")
    emu.webhooks.wait_idle()

    [received] = receiver.received
    payload = json.loads(received.body)
    assert received.headers["x-github-event"] == "repository"
    assert payload["action"] == "renamed"
    assert payload["changes"]["repository"]["name"]["from"] == "widgets"
    assert payload["repository"]["full_name"] == "acme/gadgets"


def test_hooks_not_subscribed_or_inactive_get_no_delivery(emu, receiver):
    create_hook(emu, receiver.url, events=["push"])
    create_hook(emu, receiver.url + "inactive/", active=False)

    emu.add_pull(REPO)
    emu.webhooks.wait_idle()

    assert receiver.received == []


def test_a_delivery_while_the_receiver_is_down_is_recorded_as_failed(emu, receiver):
    hook = create_hook(emu, receiver.url)
    emu.webhooks.set_deliveries_enabled(False)

    emu.add_pull(REPO)
    emu.webhooks.wait_idle()

    [delivery] = call(emu, "GET", f"/repos/{REPO}/hooks/{hook['id']}/deliveries").json()
    assert (delivery["status"], delivery["status_code"]) == ("failed to connect to host", 0)
    assert (delivery["event"], delivery["action"], delivery["redelivery"]) == (
        "pull_request",
        "opened",
        False,
    )
    assert receiver.received == []


def test_a_receiver_error_is_recorded_with_its_status_code(emu, receiver):
    hook = create_hook(emu, receiver.url)
    receiver.status = 500

    emu.add_pull(REPO)
    emu.webhooks.wait_idle()

    [delivery] = call(emu, "GET", f"/repos/{REPO}/hooks/{hook['id']}/deliveries").json()
    assert delivery["status_code"] == 500 and delivery["status"] != "OK"


def test_deliveries_are_listed_newest_first_in_cursor_pages(emu, receiver):
    hook = create_hook(emu, receiver.url)
    for _ in range(5):
        emu.add_pull(REPO)
    emu.webhooks.wait_idle()
    path = f"/repos/{REPO}/hooks/{hook['id']}/deliveries"

    seen, params = [], {"per_page": 2}
    while True:
        response = call(emu, "GET", path, **params)
        seen += [d["id"] for d in response.json()]
        if "next" not in response.links:
            break
        params = dict(
            pair.split("=") for pair in response.links["next"]["url"].split("?")[1].split("&")
        )

    assert seen == sorted(seen, reverse=True) and len(seen) == 5


def test_redelivery_sends_the_same_guid_again_marked_as_redelivery(emu, receiver):
    hook = create_hook(emu, receiver.url)
    emu.webhooks.set_deliveries_enabled(False)
    emu.add_pull(REPO)
    emu.webhooks.wait_idle()
    emu.webhooks.set_deliveries_enabled(True)
    path = f"/repos/{REPO}/hooks/{hook['id']}/deliveries"
    [failed] = call(emu, "GET", path).json()

    response = call(emu, "POST", f"{path}/{failed['id']}/attempts")
    emu.webhooks.wait_idle()

    assert response.status_code == 202
    newest = call(emu, "GET", path).json()[0]
    assert (newest["guid"], newest["redelivery"], newest["status"]) == (failed["guid"], True, "OK")
    assert [r.headers["x-github-delivery"] for r in receiver.received] == [failed["guid"]]


def test_deliveries_older_than_three_days_are_neither_listed_nor_redelivered(emu, receiver):
    hook = create_hook(emu, receiver.url)
    emu.add_pull(REPO)
    emu.webhooks.wait_idle()
    path = f"/repos/{REPO}/hooks/{hook['id']}/deliveries"
    [delivery] = call(emu, "GET", path).json()

    emu.advance(timedelta(days=3, minutes=1))

    assert call(emu, "GET", path).json() == []
    assert call(emu, "POST", f"{path}/{delivery['id']}/attempts").status_code == 422


def test_hook_altered_behind_the_products_back_shows_the_change(emu):
    hook = create_hook(emu, "https://example.com/hook")

    emu.webhooks.alter_hook(REPO, hook["id"], events=["push"], active=False)

    listed = call(emu, "GET", f"/repos/{REPO}/hooks/{hook['id']}").json()
    assert (listed["events"], listed["active"]) == (["push"], False)
