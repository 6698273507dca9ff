"""``X-Hub-Signature-256`` checks."""

from __future__ import annotations

from apps.integrations.webhooks.signature import sign, signature_is_valid

# GitHub's test vector ("Validating webhook deliveries").
DOCS_SECRET = "It's a Secret to Everybody"
DOCS_BODY = b"Hello, World!"
DOCS_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"


def test_signature_matches_githubs_documented_example():
    assert sign(body=DOCS_BODY, secret=DOCS_SECRET) == DOCS_SIGNATURE


def test_any_configured_secret_validates_during_a_rotation():
    assert signature_is_valid(
        body=DOCS_BODY, header=DOCS_SIGNATURE, secrets=["the new secret", DOCS_SECRET]
    )


def test_signature_of_another_body_is_invalid():
    assert not signature_is_valid(
        body=b"Hello, World?", header=DOCS_SIGNATURE, secrets=[DOCS_SECRET]
    )


def test_sha1_header_format_is_invalid():
    header = DOCS_SIGNATURE.replace("sha256=", "sha1=")
    assert not signature_is_valid(body=DOCS_BODY, header=header, secrets=[DOCS_SECRET])


def test_no_secret_configured_validates_nothing():
    assert not signature_is_valid(body=DOCS_BODY, header=DOCS_SIGNATURE, secrets=[])


def test_non_ascii_header_is_invalid_not_an_error():
    assert not signature_is_valid(body=DOCS_BODY, header="sha256=ü" * 10, secrets=[DOCS_SECRET])
