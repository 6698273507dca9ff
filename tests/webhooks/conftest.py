from __future__ import annotations

import pytest

from devtools.webhook_payloads import SignedDelivery

SECRET = "It's a Secret to Everybody"
OLD_SECRET = "the secret before the rotation"
URL = "/webhooks/github/"


@pytest.fixture
def secrets(settings) -> list[str]:
    """The receiver accepts the current secret and the one being rotated out."""
    settings.GITHUB_WEBHOOK_SECRETS = [SECRET, OLD_SECRET]
    return settings.GITHUB_WEBHOOK_SECRETS


@pytest.fixture
def deliver(client, secrets):
    """POST a delivery as GitHub does; returns the response."""

    def post(delivery: SignedDelivery, **extra: str):
        return client.generic(
            "POST",
            URL,
            delivery.body,
            content_type=delivery.headers["Content-Type"],
            headers={k: v for k, v in delivery.headers.items() if k != "Content-Type"},
            **extra,
        )

    return post
