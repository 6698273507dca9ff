"""The repository hook that pushes changes to our receiver: register (or repair) it, and
delete it when the repository is no longer tracked.

Our hook is the one whose config URL is the receiver's URL: GitHub shows neither who made a
hook nor its secret, so the URL is the only thing to recognise it by. Registering is
idempotent: a missing hook is created; an existing one is always updated, because a secret
can only be set, never read, and after a rotation (``GITHUB_WEBHOOK_SECRET=new,old``) the
hook must get the new one. Webhooks only speed things up: a repository whose hook cannot be
registered keeps syncing by polling, and its ``webhook_error`` says why.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator

from apps.integrations.models import TrackedRepository
from apps.integrations.services.github_client import (
    GitHubClient,
    GitHubError,
    GitHubForbidden,
    GitHubNotFound,
    client_for_integration,
)
from apps.integrations.services.tracking import InvalidInput

logger = logging.getLogger(__name__)

WEBHOOK_EVENTS = ("pull_request", "repository")
PERMISSION = 'admin:repo_hook (fine-grained tokens: the "Webhooks" repository permission)'


class HookPermissionMissing(GitHubForbidden):
    """The token may not manage the repository's hooks. GitHub answers a classic token
    without ``admin:repo_hook`` with 404 (it hides what it will not show) and a fine-grained
    token without "Webhooks" with 403."""


@dataclass(frozen=True)
class RegistrationResult:
    """``created``: there was no hook with our URL (nor the one we registered before).
    ``repaired``: there was, but its events, content type, active flag or URL were not ours.
    ``updated``: it was as expected (its secret was set again all the same)."""

    tracked_repo: TrackedRepository
    action: Literal["created", "repaired", "updated"]
    hook_id: int


def validate_webhook_url(url: str | None) -> str:
    url = (url or "").strip()
    if not url:
        raise InvalidInput("no webhook URL: pass --url URL (or set GITHUB_WEBHOOK_URL)")
    try:
        URLValidator(schemes=["http", "https"])(url)
    except ValidationError:
        raise InvalidInput(f"invalid webhook URL {url!r}: expected an http(s) URL") from None
    return url


def current_webhook_secret() -> str:
    """The secret new and repaired hooks get: the first of ``GITHUB_WEBHOOK_SECRET``."""
    if not settings.GITHUB_WEBHOOK_SECRETS:
        raise InvalidInput(
            "GITHUB_WEBHOOK_SECRET is not set: hooks are registered with its first secret"
        )
    return settings.GITHUB_WEBHOOK_SECRETS[0]


def webhook_register(
    *, tracked_repo: TrackedRepository, url: str, client: GitHubClient | None = None
) -> RegistrationResult:
    """Create or repair ``tracked_repo``'s hook (events pull_request and repository, JSON,
    the current secret) and store its id.

    Raises InvalidInput (bad URL, no secret), HookPermissionMissing, or the GitHubError the
    request met; a GitHub error is also recorded in ``webhook_error``.
    """
    url = validate_webhook_url(url)
    secret = current_webhook_secret()
    full_name = tracked_repo.full_name
    try:
        client = client or client_for_integration(tracked_repo.integration)
        hooks = client.list_repository_hooks(full_name)
        ours = next((h for h in hooks if (h.get("config") or {}).get("url") == url), None)
        if ours is None and tracked_repo.webhook_id is not None:
            # The receiver moved (a new --url): the hook we registered before is moved with
            # it, not left behind to fail every delivery beside a second one.
            ours = next((h for h in hooks if h.get("id") == tracked_repo.webhook_id), None)
        if ours is None:
            hook = client.create_repository_hook(
                full_name, url=url, secret=secret, events=WEBHOOK_EVENTS
            )
            action: Literal["created", "repaired", "updated"] = "created"
        else:
            hook = client.update_repository_hook(
                full_name, ours["id"], url=url, secret=secret, events=WEBHOOK_EVENTS
            )
            as_before = _as_expected(ours) and (ours.get("config") or {}).get("url") == url
            action = "updated" if as_before else "repaired"
    except (GitHubForbidden, GitHubNotFound) as error:
        missing = HookPermissionMissing(
            f"cannot manage the hooks of {full_name}: GitHub answered {error.status}; the "
            f"token needs {PERMISSION}"
            + (" (or the repository is gone)" if error.status == 404 else ""),
            status=error.status,
        )
        _record_error(tracked_repo, str(missing))
        raise missing from error
    except GitHubError as error:
        _record_error(tracked_repo, f"could not register the hook: {error}")
        raise
    hook_id = int(hook["id"])
    TrackedRepository.objects.filter(pk=tracked_repo.pk).update(
        webhook_id=hook_id, webhook_error=""
    )
    tracked_repo.webhook_id, tracked_repo.webhook_error = hook_id, ""
    logger.info(
        "webhook.registered",
        extra={"repo_id": tracked_repo.pk, "hook_id": hook_id, "action": action},
    )
    return RegistrationResult(tracked_repo=tracked_repo, action=action, hook_id=hook_id)


def _as_expected(hook: dict) -> bool:
    config = hook.get("config") or {}
    return (
        sorted(hook.get("events") or []) == sorted(WEBHOOK_EVENTS)
        and config.get("content_type") == "json"
        and bool(hook.get("active"))
    )


def webhook_unregister(
    *, tracked_repo: TrackedRepository, client: GitHubClient | None = None
) -> bool:
    """Delete ``tracked_repo``'s hook on GitHub, best effort: for a repository no longer
    tracked (or deactivated). Returns False when GitHub could not be asked (the error is
    logged and recorded in ``webhook_error``); never raises a GitHubError.

    A hook another active tracked row shares (the same GitHub repository tracked by another
    team finds the same hook by its URL) is left in place; this row just forgets it.
    """
    hook_id = tracked_repo.webhook_id
    if hook_id is None:
        return True
    shared = (
        TrackedRepository.objects.filter(
            github_repo_id=tracked_repo.github_repo_id, webhook_id=hook_id, is_active=True
        )
        .exclude(pk=tracked_repo.pk)
        .exists()
    )
    try:
        if not shared:
            client = client or client_for_integration(tracked_repo.integration)
            _delete_hook(client, tracked_repo.full_name, hook_id)
    except GitHubError as error:
        logger.warning(
            "webhook.unregister_failed",
            extra={"repo_id": tracked_repo.pk, "hook_id": hook_id, "error": str(error)},
        )
        _record_error(tracked_repo, f"could not delete hook {hook_id} on GitHub: {error}")
        return False
    TrackedRepository.objects.filter(pk=tracked_repo.pk).update(
        webhook_id=None, webhook_error="", webhook_deliveries_cursor=""
    )
    tracked_repo.webhook_id, tracked_repo.webhook_error = None, ""
    tracked_repo.webhook_deliveries_cursor = ""
    logger.info("webhook.unregistered", extra={"repo_id": tracked_repo.pk, "hook_id": hook_id})
    return True


def _delete_hook(client: GitHubClient, full_name: str, hook_id: int) -> None:
    """Delete the hook; a hook (or repository) already gone is fine.

    A 404 alone does not say which: GitHub also answers 404 to a classic token without
    ``admin:repo_hook``. Only then are two more requests spent to tell.
    """
    try:
        client.delete_repository_hook(full_name, hook_id)
        return
    except GitHubNotFound:
        pass
    try:
        client.get_repository(full_name)
    except GitHubNotFound:
        return  # the repository is gone, and its hooks with it
    try:
        client.list_repository_hooks(full_name)
    except GitHubNotFound as error:
        raise HookPermissionMissing(
            f"GitHub answered 404; the token needs {PERMISSION}", status=404
        ) from error


def _record_error(tracked_repo: TrackedRepository, message: str) -> None:
    # A row update, not save(): syncs write other columns of this row at any time.
    TrackedRepository.objects.filter(pk=tracked_repo.pk).update(webhook_error=message)
    tracked_repo.webhook_error = message


def webhook_state(tracked_repo: TrackedRepository) -> str:
    """What the admin shows: none, active, or failing (the last recovery pass found
    deliveries it could not redo)."""
    if tracked_repo.webhook_id is None:
        return "none"
    if tracked_repo.webhook_failed_deliveries:
        return f"failing ({tracked_repo.webhook_failed_deliveries} failed)"
    return "active"
