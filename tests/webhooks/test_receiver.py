"""The receiver's answers before any event is applied: signature, size, ping, unused events."""

from __future__ import annotations

import json

import pytest

from apps.integrations.models import PullRequest, WebhookDelivery
from devtools.webhook_payloads import pull_request_payload, signed
from tests import builders
from tests.webhooks.conftest import OLD_SECRET, SECRET, URL

pytestmark = pytest.mark.django_db

REPO = "acme/widgets"


@pytest.fixture
def pr_payload(emulator):
    emulator.add_pull(REPO, title="Add webhooks")
    builders.tracked_repo(emulator, REPO)
    return pull_request_payload(emulator, REPO, 1)


def test_ping_is_answered_200(deliver):
    response = deliver(signed({"zen": "Keep it logically awesome.", "hook_id": 1}, event="ping",
                              secret=SECRET))  # fmt: skip

    assert response.status_code == 200


def test_missing_signature_is_401_without_a_database_query(
    deliver, pr_payload, django_assert_num_queries
):
    delivery = signed(pr_payload, event="pull_request", secret=SECRET)
    del delivery.headers["X-Hub-Signature-256"]

    with django_assert_num_queries(0):
        response = deliver(delivery)

    assert response.status_code == 401


def test_bad_signature_is_401_without_a_database_query(
    deliver, pr_payload, django_assert_num_queries
):
    delivery = signed(pr_payload, event="pull_request", secret="not our secret")

    with django_assert_num_queries(0):
        response = deliver(delivery)

    assert response.status_code == 401


def test_bad_signature_stores_nothing(deliver, pr_payload):
    deliver(signed(pr_payload, event="pull_request", secret="not our secret"))

    assert not PullRequest.objects.exists()
    assert not WebhookDelivery.objects.exists()


def test_signature_with_the_secret_being_rotated_out_is_accepted(deliver, pr_payload):
    response = deliver(signed(pr_payload, event="pull_request", secret=OLD_SECRET))

    assert response.status_code == 200
    assert PullRequest.objects.count() == 1


def test_without_a_configured_secret_every_delivery_is_refused(deliver, settings, pr_payload):
    settings.GITHUB_WEBHOOK_SECRETS = []

    response = deliver(signed(pr_payload, event="pull_request", secret=""))

    assert response.status_code == 401
    assert not PullRequest.objects.exists()


def test_body_declared_over_githubs_cap_is_413_without_being_read(deliver):
    # The test client's input raises if the view reads past the 2 bytes it holds.
    delivery = signed(b"{}", event="pull_request", secret=SECRET)

    response = deliver(delivery, CONTENT_LENGTH=str(30 * 1024 * 1024))

    assert response.status_code == 413


def test_body_without_a_content_length_is_411(deliver):
    response = deliver(signed(b"{}", event="ping", secret=SECRET), CONTENT_LENGTH="")

    assert response.status_code == 411


def test_body_at_githubs_cap_is_read(deliver):
    body = b'{"zen": "' + b"x" * (25 * 1024 * 1024 - 11) + b'"}'
    assert len(body) == 25 * 1024 * 1024

    response = deliver(signed(body, event="ping", secret=SECRET))

    assert response.status_code == 200


def test_event_not_used_is_202_without_a_database_query(deliver, django_assert_num_queries):
    delivery = signed({"action": "created", "issue": {}}, event="issue_comment", secret=SECRET)

    with django_assert_num_queries(0):
        response = deliver(delivery)

    assert response.status_code == 202


def test_repository_action_not_used_is_202(deliver, emulator):
    emulator.add_repo(REPO)
    builders.tracked_repo(emulator, REPO)
    payload = {"action": "publicized", "repository": {"id": emulator.get_repo(REPO).id}}

    response = deliver(signed(payload, event="repository", secret=SECRET))

    assert response.status_code == 202
    assert not WebhookDelivery.objects.exists()


def test_signed_body_that_is_not_json_is_400(deliver):
    response = deliver(signed(b"<html>", event="pull_request", secret=SECRET))

    assert response.status_code == 400


def test_pull_request_payload_without_a_pull_request_is_400_and_stores_nothing(deliver, pr_payload):
    del pr_payload["pull_request"]

    response = deliver(signed(pr_payload, event="pull_request", secret=SECRET))

    assert response.status_code == 400
    assert not WebhookDelivery.objects.exists()


def test_delivery_without_a_guid_is_400(deliver, pr_payload):
    delivery = signed(pr_payload, event="pull_request", secret=SECRET)
    del delivery.headers["X-GitHub-Delivery"]

    response = deliver(delivery)

    assert response.status_code == 400
    assert not PullRequest.objects.exists()


def test_form_encoded_delivery_is_read_like_json(deliver, pr_payload):
    from urllib.parse import urlencode

    body = urlencode({"payload": json.dumps(pr_payload)}).encode()
    delivery = signed(body, event="pull_request", secret=SECRET)
    delivery.headers["Content-Type"] = "application/x-www-form-urlencoded"

    response = deliver(delivery)

    assert response.status_code == 200
    assert PullRequest.objects.count() == 1


def test_get_is_not_allowed(client):
    assert client.get(URL).status_code == 405
