"""Dramatiq middleware that records the outcome of sync actors on their repository."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import dramatiq
from dramatiq.logging import get_logger
from dramatiq.middleware import Middleware, Retries


class SyncOutcomeMiddleware(Middleware):
    """Records each sync message's outcome through ``services.sync_outcome``.

    Applies to actors declared with ``records_sync_outcome=True``; their first argument is a
    ``TrackedRepository`` id. Before: ``syncing`` (unless the repository is missing, inactive
    or disconnected). After: ``idle`` on a finished pass; ``queued`` when a slice ends and the
    sync continues in a new message; ``rate_limited`` with the reset time when deferred;
    ``error`` with a short token-free message when the failure is final (a permanent GitHub
    answer, or transient retries exhausted). While transient retries remain, ``queued`` with
    the error and the retry count. Skipped and dropped messages change nothing.

    After-hooks run in reverse middleware order: list this after ``Retries`` and
    ``DbConnectionsMiddleware`` so it runs before them (the message's retry count is not yet
    incremented, and the database connection is still open). Dramatiq's own
    ``RateLimitExceeded`` (its rate limiters) is an ordinary exception here, not a GitHub
    rate limit.
    """

    def __init__(self) -> None:
        self.logger = get_logger(__name__, type(self))

    @property
    def actor_options(self) -> set[str]:
        return {"records_sync_outcome"}

    def _applies(self, broker: dramatiq.Broker, message: dramatiq.Message) -> bool:
        try:
            actor = broker.get_actor(message.actor_name)
        except dramatiq.errors.ActorNotFound:
            return False
        return bool(actor.options.get("records_sync_outcome")) and bool(message.args)

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.Message) -> None:
        if not self._applies(broker, message):
            return
        from apps.integrations.services import sync_outcome
        from apps.integrations.services.sync_jobs import syncable_repository

        repo, _ = syncable_repository(message.args[0])
        if repo is not None:
            sync_outcome.repository_sync_started(tracked_repo=repo)

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: dramatiq.Message,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        if not self._applies(broker, message):
            return
        from apps.integrations.models import TrackedRepository
        from apps.integrations.services import sync_outcome
        from apps.integrations.services.github_client import GitHubError

        action = result.get("action") if isinstance(result, dict) else None
        if exception is None and action not in {"synced", "continue", "deferred"}:
            return  # skipped, dropped or waiting: nothing to record, nothing to load
        repo = (
            TrackedRepository.objects.select_related("integration")
            .filter(pk=message.args[0])
            .first()
        )
        if repo is None:
            return
        if exception is None:
            if action == "synced":
                sync_outcome.repository_sync_succeeded(tracked_repo=repo)
            elif action == "continue":
                sync_outcome.repository_sync_queued(tracked_repo_ids=[repo.pk])
            elif action == "deferred":
                retry_at = datetime.fromisoformat(result["retry_at"])
                sync_outcome.repository_sync_rate_limited(tracked_repo=repo, retry_at=retry_at)
            return

        final, attempt, max_retries = self._is_final(broker, message, exception)
        if final:
            if isinstance(exception, GitHubError):
                sync_outcome.repository_sync_error(tracked_repo=repo, error=exception)
            else:
                sync_outcome.repository_sync_failed(
                    tracked_repo=repo, message=f"{type(exception).__name__}: {exception}"
                )
        else:
            sync_outcome.repository_sync_retrying(
                tracked_repo=repo,
                message=f"{exception} (retry {attempt + 1} of {max_retries})",
            )

    def _is_final(
        self, broker: dramatiq.Broker, message: dramatiq.Message, exception: BaseException
    ) -> tuple[bool, int, int]:
        """Would the Retries middleware give up on this message? Same rule as Retries."""
        actor = broker.get_actor(message.actor_name)
        throws = message.options.get("throws") or actor.options.get("throws")
        retries = message.options.get("retries", 0)
        default = next((m.max_retries for m in broker.middleware if isinstance(m, Retries)), None)
        max_retries = message.options.get("max_retries", actor.options.get("max_retries", default))
        if default is None:  # no Retries middleware: nothing will be retried
            return True, retries, 0
        if throws and isinstance(exception, throws):
            return True, retries, max_retries
        return max_retries is not None and retries >= max_retries, retries, max_retries or 0
