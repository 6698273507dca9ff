"""``X-Hub-Signature-256``: HMAC-SHA256 of the raw body with the hook's secret.

https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

PREFIX = "sha256="


def sign(*, body: bytes, secret: str) -> str:
    """The header value GitHub sends for ``body`` signed with ``secret``."""
    return PREFIX + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signature_is_valid(*, body: bytes, header: str | None, secrets: Sequence[str]) -> bool:
    """Whether ``header`` signs ``body`` with one of ``secrets`` (any of them: during a
    rotation hooks carry the old secret or the new one). No secrets: nothing is valid.

    Every secret is compared, in constant time, so the answer time does not tell which one
    matched or how much of a forged signature was right.
    """
    if not header or not secrets:
        return False
    given = header.strip().encode("ascii", "replace")
    matched = False
    for secret in secrets:
        matched |= hmac.compare_digest(given, sign(body=body, secret=secret).encode())
    return matched
