"""``POST /webhooks/github/``: GitHub's deliveries.

Answers (GitHub shows the status and the small JSON body in the hook's delivery log):

- 413: ``Content-Length`` over GitHub's 25 MB cap, refused before the body is read;
  411 without a ``Content-Length`` (GitHub always sends one).
- 401: signature missing or wrong, or no ``GITHUB_WEBHOOK_SECRET`` configured. Checked before
  anything else touches the database: an unauthenticated caller cannot make it do work.
- 200: ``ping``; a delivery applied, or already applied before (same GUID).
- 202: an event or action not used here, or a repository nobody tracks: nothing stored.
- 400: a signed body that is not a usable payload, or no ``X-GitHub-Delivery``.
- 503: the database is unavailable. GitHub records the delivery as failed, and the recovery
  job (or a manual redelivery) sends it again.
"""

from __future__ import annotations

import json
import logging
from urllib.parse import parse_qs

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from apps.integrations.services.webhook_events import (
    MAX_PAYLOAD_BYTES,
    Delivery,
    Outcome,
    WebhookPayloadError,
    webhook_delivery_apply,
    webhook_event_is_handled,
)
from apps.integrations.webhooks.signature import signature_is_valid

logger = logging.getLogger(__name__)

GUID_MAX_LENGTH = 64  # WebhookDelivery.guid; GitHub's are 36 characters

_STATUS = {
    Outcome.APPLIED: 200,
    Outcome.STALE: 200,
    Outcome.RENAMED: 200,
    Outcome.DEACTIVATED: 200,
    Outcome.REACTIVATED: 200,
    Outcome.UNCHANGED: 200,
    Outcome.DUPLICATE: 200,
    Outcome.UNTRACKED: 202,
    Outcome.IGNORED: 202,
}


def _answer(status: int, **body: object) -> JsonResponse:
    return JsonResponse(body, status=status)


@csrf_exempt  # authenticated by its signature; GitHub has no CSRF token to send
@require_POST
def github_webhook(request: HttpRequest) -> JsonResponse:
    length = _content_length(request)
    if length is None:
        return _answer(411, error="Content-Length required")
    if length > MAX_PAYLOAD_BYTES:
        return _answer(413, error="payload over GitHub's 25 MB cap")
    # Read from the stream, not request.body: DATA_UPLOAD_MAX_MEMORY_SIZE (2.5 MB) guards
    # the admin's forms and stays as it is; the cap above bounds this view.
    body = request.read(length)

    event = request.headers.get("X-GitHub-Event", "")
    guid = request.headers.get("X-GitHub-Delivery", "")
    if not signature_is_valid(
        body=body,
        header=request.headers.get("X-Hub-Signature-256"),
        secrets=settings.GITHUB_WEBHOOK_SECRETS,
    ):
        logger.warning(
            "webhook.signature_rejected",
            extra={
                "guid": guid[:GUID_MAX_LENGTH],
                "event": event[:64],
                "configured": bool(settings.GITHUB_WEBHOOK_SECRETS),
            },
        )
        return _answer(401, error="signature missing or invalid")

    if event == "ping":
        return _answer(200, outcome="pong")
    if not guid or len(guid) > GUID_MAX_LENGTH:
        return _answer(400, error="X-GitHub-Delivery missing or too long")
    try:
        payload = _payload(request, body)
    except ValueError:
        return _answer(400, error="body is not a JSON object")
    if not webhook_event_is_handled(event=event, action=str(payload.get("action") or "")):
        return _answer(202, outcome=str(Outcome.IGNORED))

    try:
        result = webhook_delivery_apply(delivery=Delivery(guid=guid, event=event, payload=payload))
    except WebhookPayloadError as error:
        return _answer(400, error=str(error))
    except (OperationalError, InterfaceError) as error:
        logger.error(
            "webhook.database_unavailable",
            extra={"guid": guid, "event": event, "error": type(error).__name__},
        )
        return _answer(503, error="database unavailable; redeliver later")
    return _answer(_STATUS[result.outcome], outcome=str(result.outcome))


def _content_length(request: HttpRequest) -> int | None:
    try:
        length = int(request.META.get("CONTENT_LENGTH") or "")
    except ValueError:
        return None
    return length if length >= 0 else None


def _payload(request: HttpRequest, body: bytes) -> dict:
    """The JSON payload; hooks made with content type ``form`` send it as ``payload=``."""
    if request.content_type == "application/x-www-form-urlencoded":
        body = (parse_qs(body.decode("utf-8", "replace")).get("payload") or [""])[0].encode()
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError("not JSON") from None
    if not isinstance(payload, dict):
        raise ValueError("not a JSON object")
    return payload
