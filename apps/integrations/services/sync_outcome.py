"""The one place that records a sync's outcome on ``TrackedRepository``.

``sync_status``, ``last_sync_error`` and ``last_sync_at`` are written here and nowhere else,
and so are the columns that say how long a status has held (``sync_status_changed_at``,
``sync_retry_at``) and what was requested and sent (``sync_requested_at``,
``sync_enqueued_at``). The functions are called where each outcome happens: the sync job
(started, finished, continued), the actor (deferred for a rate limit), whoever decides an
error is final (the Dramatiq middleware after the Retries middleware, or the CLI), the task
layer once messages are in the queue, and the sweep. Writes are ``UPDATE``s of those columns
only, so they never clobber the checkpoint a running sync saves.

``queued`` is recorded only for a message that is in the queue (``repository_syncs_enqueued``,
after the send): a send that fails leaves no repository waiting for a message that does not
exist.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from datetime import datetime
from typing import Literal

from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from apps.integrations.models import GitHubIntegration, IntegrationCredential, TrackedRepository
from apps.integrations.services import rate_limits
from apps.integrations.services.github_client import (
    GitHubError,
    GitHubRateLimited,
    GitHubUnauthorized,
    format_github_time,
)
from apps.integrations.services.sync_lease import lease_free

logger = logging.getLogger(__name__)

Status = TrackedRepository.SyncStatus
MAX_ERROR_LENGTH = 500
CREDENTIALS_REJECTED = (
    "GitHub rejected the credentials (401 Bad credentials); the integration is disconnected. "
    "Reconnect it with: manage.py track_repo OWNER/NAME --team SLUG"
)
DISCONNECTED = (
    "The team's GitHub integration is disconnected (it has no credential), so this repository "
    "cannot sync. Reconnect it with: manage.py track_repo OWNER/NAME --team SLUG"
)

# Shapes of GitHub tokens (classic, fine-grained, app, OAuth) and "token xyz" headers: a
# message from elsewhere (an exception's text) must not carry one into the database.
_TOKEN_PATTERNS = re.compile(
    r"(gh[pousr]_[A-Za-z0-9_]{16,}|github_pat_[A-Za-z0-9_]{20,}"
    r"|(?i:(?:token|bearer|basic|authorization)\s*[:=]?\s*)[A-Za-z0-9_\-\.=+/]{12,})"
)


def safe_error_message(message: str) -> str:
    """A short, single-line, token-free message fit for ``last_sync_error``."""
    text = " ".join(str(message).split())
    text = _TOKEN_PATTERNS.sub("[redacted]", text)
    if len(text) > MAX_ERROR_LENGTH:
        text = text[: MAX_ERROR_LENGTH - 1] + "…"
    return text


def rate_limited_message(retry_at: datetime) -> str:
    return f"rate limited until {format_github_time(retry_at)}"


def _status(status: str, **fields: object) -> dict[str, object]:
    """The columns of a status write. Each says when it was made: the sweep tells a status
    that still holds from a stuck one by its age."""
    return {
        "sync_status": status,
        "sync_status_changed_at": timezone.now(),
        "sync_retry_at": None,
        **fields,
    }


def _set(repo_ids: Iterable[int], status: str, **fields: object) -> int:
    return TrackedRepository.objects.filter(pk__in=list(repo_ids)).update(
        **_status(status, **fields)
    )


def _set_unless_syncing(repo_id: int, status: str, **fields: object) -> int:
    """Record a failure unless a sync holds the repository's lease right now: that is a
    newer sync (a retry already running, another request), and its outcome comes later."""
    return TrackedRepository.objects.filter(lease_free(timezone.now()), pk=repo_id).update(
        **_status(status, **fields)
    )


def repository_syncs_requested(
    *, repos: QuerySet[TrackedRepository], requested_at: datetime
) -> int:
    """The fan-out, asked for at ``requested_at``, is about to send a message for each of
    ``repos``: note the request on those that had none enqueued since. A fan-out that stops
    halfway (Redis lost) leaves the rest noted, and its retry or the sweep sends them; a retry
    of the same fan-out finds the ones already sent unnoted and leaves them alone. Returns
    how many are noted."""
    not_sent_since = Q(sync_enqueued_at__isnull=True) | Q(sync_enqueued_at__lt=requested_at)
    return repos.filter(not_sent_since).update(sync_requested_at=timezone.now())


def repository_syncs_enqueued(*, tracked_repo_ids: Iterable[int], sent_at: datetime) -> int:
    """Sync messages for ``tracked_repo_ids`` are in the queue, sent at or after ``sent_at``
    (read before sending): they show ``queued``, and their request is no longer pending.

    Except where a worker has reached the repository since: one that holds its lease, or
    that set its status at or after ``sent_at``, has an outcome newer than this mark (a sync
    can start, and even finish, before the sender gets here), and it stays. Returns how many
    show ``queued``.
    """
    rows = TrackedRepository.objects.filter(pk__in=list(tracked_repo_ids))
    with transaction.atomic():
        rows.update(sync_enqueued_at=sent_at)
        rows.filter(sync_requested_at__lte=sent_at).update(sync_requested_at=None)
        return rows.filter(lease_free(timezone.now()), sync_status_changed_at__lt=sent_at).update(
            **_status(Status.QUEUED)
        )


def repository_sync_queued(*, tracked_repo_ids: Iterable[int]) -> int:
    """A backfill did its share and its next message follows at once."""
    return _set(tracked_repo_ids, Status.QUEUED)


def repository_sync_started(*, tracked_repo: TrackedRepository) -> None:
    _set([tracked_repo.pk], Status.SYNCING)
    tracked_repo.sync_status = Status.SYNCING


def repository_sync_succeeded(*, tracked_repo: TrackedRepository) -> None:
    """A pass finished: the repository is up to date as of now."""
    now = timezone.now()
    _set([tracked_repo.pk], Status.IDLE, last_sync_error="", last_sync_at=now)
    tracked_repo.sync_status, tracked_repo.last_sync_error = Status.IDLE, ""
    tracked_repo.last_sync_at = now


def repository_sync_rate_limited(*, tracked_repo_id: int, retry_at: datetime) -> str:
    """GitHub refused for a rate limit; the sync resumes at ``retry_at``."""
    message = rate_limited_message(retry_at)
    _set([tracked_repo_id], Status.RATE_LIMITED, last_sync_error=message, sync_retry_at=retry_at)
    logger.info(
        "repo_sync.rate_limited",
        extra={"repo_id": tracked_repo_id, "retry_at": retry_at.isoformat()},
    )
    return message


def repository_sync_retrying(*, tracked_repo: TrackedRepository, message: str) -> None:
    """A transient failure that will be retried: back in the queue, with the reason shown."""
    text = safe_error_message(message)
    _set_unless_syncing(tracked_repo.pk, Status.QUEUED, last_sync_error=text)
    tracked_repo.sync_status, tracked_repo.last_sync_error = Status.QUEUED, text


def repository_sync_failed(*, tracked_repo: TrackedRepository, message: str) -> None:
    text = safe_error_message(message)
    _set_unless_syncing(tracked_repo.pk, Status.ERROR, last_sync_error=text)
    tracked_repo.sync_status, tracked_repo.last_sync_error = Status.ERROR, text
    logger.warning("repo_sync.failed", extra={"repo_id": tracked_repo.pk, "error": text})


def integration_credentials_rejected(*, integration: GitHubIntegration) -> int:
    """GitHub answered 401: drop the credential and say so on every repository.

    The integration, its repositories and their pull requests stay; the daily fan-out skips a
    disconnected integration until ``track_repo`` stores a new token.
    """
    with transaction.atomic():
        IntegrationCredential.objects.filter(integration=integration).delete()
        count = TrackedRepository.objects.filter(integration=integration).update(
            **_status(Status.ERROR, last_sync_error=CREDENTIALS_REJECTED)
        )
    # Forget the cached related object so is_connected answers from the database.
    integration._state.fields_cache.pop("credential", None)
    logger.warning(
        "github.credentials_rejected",
        extra={"integration_id": integration.pk, "repositories": count},
    )
    return count


def integration_reconnected(*, integration: GitHubIntegration) -> int:
    """A new token was stored: clear the credential error on the integration's repositories."""
    return TrackedRepository.objects.filter(
        integration=integration, last_sync_error__in=[CREDENTIALS_REJECTED, DISCONNECTED]
    ).update(**_status(Status.IDLE, last_sync_error=""))


def repository_sync_abandoned(
    *, tracked_repo_ids: Iterable[int], reason: Literal["inactive", "disconnected"]
) -> int:
    """Repositories left ``queued``, ``syncing`` or ``rate_limited`` that no message will
    sync (the job skips them) get a status that stays true: an inactive one ``idle`` with its
    last error kept (it is not meant to sync), one whose integration is disconnected
    ``error`` saying so (until it is reconnected). The status is checked again in the write,
    with the lease: a sync that started meanwhile keeps its own. Returns how many changed."""
    pending = [Status.QUEUED, Status.SYNCING, Status.RATE_LIMITED]
    rows = TrackedRepository.objects.filter(
        lease_free(timezone.now()), pk__in=list(tracked_repo_ids), sync_status__in=pending
    )
    if reason == "inactive":
        return rows.update(**_status(Status.IDLE))
    return rows.update(**_status(Status.ERROR, last_sync_error=DISCONNECTED))


def repository_sync_error(*, tracked_repo: TrackedRepository, error: GitHubError) -> None:
    """Record a GitHub error as the outcome of a sync of ``tracked_repo``."""
    if isinstance(error, GitHubRateLimited):
        message = repository_sync_rate_limited(
            tracked_repo_id=tracked_repo.pk, retry_at=rate_limits.earliest_retry(error)
        )
        tracked_repo.sync_status, tracked_repo.last_sync_error = Status.RATE_LIMITED, message
    elif isinstance(error, GitHubUnauthorized):
        integration_credentials_rejected(integration=tracked_repo.integration)
        tracked_repo.sync_status, tracked_repo.last_sync_error = Status.ERROR, CREDENTIALS_REJECTED
    else:
        repository_sync_failed(tracked_repo=tracked_repo, message=str(error))
