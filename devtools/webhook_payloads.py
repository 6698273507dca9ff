"""GitHub webhook deliveries as GitHub sends them, built from the emulator's records.

The ``pull_request`` and ``repository`` objects are the emulator's REST renderings (the same
JSON ``GET /repos/o/r/pulls/N`` answers), wrapped as GitHub's webhook payloads are
(https://docs.github.com/en/webhooks/webhook-events-and-payloads). For tests and the
benchmark; never deployed.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from apps.integrations.webhooks.signature import sign
from devtools.github_emulator import GitHubEmulator
from devtools.github_emulator.render import Ctx, login_json, pull_json, repo_json

# Every pull_request action GitHub documents.
PULL_REQUEST_ACTIONS = (
    "assigned",
    "auto_merge_disabled",
    "auto_merge_enabled",
    "closed",
    "converted_to_draft",
    "demilestoned",
    "dequeued",
    "edited",
    "enqueued",
    "labeled",
    "locked",
    "milestoned",
    "opened",
    "ready_for_review",
    "reopened",
    "review_request_removed",
    "review_requested",
    "synchronize",
    "unassigned",
    "unlabeled",
    "unlocked",
)


@dataclass(frozen=True)
class SignedDelivery:
    """What goes over the wire: the raw body and GitHub's headers."""

    event: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def guid(self) -> str:
        return self.headers["X-GitHub-Delivery"]


def _ctx(emulator: GitHubEmulator) -> Ctx:
    return Ctx(api=emulator.api_url, html=emulator.url, store=emulator)


def pull_request_payload(
    emulator: GitHubEmulator, full_name: str, number: int, *, action: str = "opened"
) -> dict[str, Any]:
    """A ``pull_request`` payload carrying PR ``number`` as the emulator holds it now."""
    ctx = _ctx(emulator)
    with emulator.lock:
        repo = emulator.get_repo(full_name)
        item = emulator.get(full_name, number)
        repository = repo_json(ctx, repo)
        pull = pull_json(ctx, repo, item, full=True, repo_data=repo_json(ctx, repo, full=False))
        sender = login_json(ctx, item.author)
    payload: dict[str, Any] = {"action": action, "number": number, "pull_request": pull}
    if action == "synchronize":
        payload |= {"before": "0" * 40, "after": pull["head"]["sha"]}
    elif action == "edited":
        payload["changes"] = {"title": {"from": pull["title"] + " (old)"}}
    elif action in {"labeled", "unlabeled"}:
        payload["label"] = {"id": 1, "name": "bug", "color": "d73a4a", "default": True}
    elif action in {"assigned", "unassigned"}:
        payload["assignee"] = sender
    elif action in {"review_requested", "review_request_removed"}:
        payload["requested_reviewer"] = sender
    payload |= {"repository": repository, "sender": sender}
    return payload


def repository_payload(
    emulator: GitHubEmulator,
    full_name: str,
    *,
    action: str,
    changes: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A ``repository`` payload for the repository as the emulator holds it now."""
    ctx = _ctx(emulator)
    with emulator.lock:
        repo = emulator.get_repo(full_name)
        repository = repo_json(ctx, repo)
        sender = login_json(ctx, repo.owner)
    repository["archived"] = action == "archived"
    payload: dict[str, Any] = {"action": action}
    if changes is not None:
        payload["changes"] = changes
    return payload | {"repository": repository, "sender": sender}


def signed(
    payload: dict[str, Any] | bytes,
    *,
    event: str,
    secret: str,
    guid: str | None = None,
    hook_id: int = 1,
) -> SignedDelivery:
    """The delivery GitHub would send for ``payload`` through a hook with ``secret``."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/7c0c2a1",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": guid or str(uuid.uuid4()),
        "X-GitHub-Hook-ID": str(hook_id),
        "X-Hub-Signature-256": sign(body=body, secret=secret),
    }
    return SignedDelivery(event=event, body=body, headers=headers)
