"""Dramatiq middleware that records the failures of sync actors on their repository."""

from __future__ import annotations

import dramatiq
from dramatiq.logging import get_logger
from dramatiq.middleware import Middleware, Retries


class SyncOutcomeMiddleware(Middleware):
    """Records, through ``services.sync_outcome``, how a sync message failed.

    Applies to actors declared with ``records_sync_outcome=True``, whose first argument is a
    ``TrackedRepository`` id. Everything else a sync ends with (idle, queued for a
    continuation, rate limited) is recorded by the sync job and the actor where it happens;
    this middleware handles exceptions only. What it records follows what the ``Retries``
    middleware decided for the message, never a copy of its rules: a message Retries
    failed (a ``throws`` error, retries exhausted, ``retry_when`` said no) is ``error`` with a
    short token-free message; a message Retries sent again is ``queued`` with the error and
    the retry count.

    So it must see the message after Retries: list it *before* ``Retries`` in the broker's
    middleware (after-hooks run in reverse order); Django's system checks (which
    ``rundramatiq`` runs) refuse any other order.
    Dramatiq's own ``RateLimitExceeded`` (its rate limiters) is an ordinary exception here,
    not a GitHub rate limit.
    """

    def __init__(self) -> None:
        self.logger = get_logger(__name__, type(self))

    @property
    def actor_options(self) -> set[str]:
        return {"records_sync_outcome"}

    @classmethod
    def ordered_before_retries(cls, broker: dramatiq.Broker) -> bool:
        """Whether this middleware sees messages after Retries decided (checked at start-up
        by ``apps.integrations.checks``)."""
        kinds = [type(m) for m in broker.middleware]
        mine = [i for i, kind in enumerate(kinds) if issubclass(kind, cls)]
        retries = [i for i, kind in enumerate(kinds) if issubclass(kind, Retries)]
        return not mine or (bool(retries) and mine[0] < retries[0])

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: dramatiq.Message,
        *,
        result: object = None,
        exception: BaseException | None = None,
    ) -> None:
        if exception is None or not message.args:
            return
        try:
            actor = broker.get_actor(message.actor_name)
        except dramatiq.errors.ActorNotFound:
            return
        if not actor.options.get("records_sync_outcome"):
            return

        from apps.integrations.models import TrackedRepository
        from apps.integrations.services import sync_outcome
        from apps.integrations.services.github_client import GitHubError

        repo = (
            TrackedRepository.objects.select_related("integration")
            .filter(pk=message.args[0])
            .first()
        )
        if repo is None:
            return
        # Set by Retries: failed means it gave up; otherwise it has re-enqueued the message
        # and counted the attempt in the "retries" option.
        if message.failed:
            if isinstance(exception, GitHubError):
                sync_outcome.repository_sync_error(tracked_repo=repo, error=exception)
            else:
                sync_outcome.repository_sync_failed(
                    tracked_repo=repo, message=f"{type(exception).__name__}: {exception}"
                )
            return
        attempt = message.options.get("retries", 0)
        default = next((m.max_retries for m in broker.middleware if isinstance(m, Retries)), None)
        limit = message.options.get("max_retries", actor.options.get("max_retries", default))
        if actor.options.get("retry_when") is not None or limit is None:
            of = ""  # retry_when decides each time: there is no fixed count to show
        else:
            of = f" of {limit}"
        sync_outcome.repository_sync_retrying(
            tracked_repo=repo, message=f"{exception} (retry {attempt}{of})"
        )
