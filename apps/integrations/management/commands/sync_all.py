from __future__ import annotations

from typing import Any

from redis.exceptions import RedisError

from apps.integrations.management.commands._base import EXIT_TEMPFAIL, OperatorCommand


class Command(OperatorCommand):
    help = (
        "Enqueue the daily fan-out now (what the scheduler's job does): workers then sync every "
        "active repository whose integration is connected."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        from apps.integrations.tasks import sync_all_repositories

        try:
            message = sync_all_repositories.send()
        except RedisError as exc:
            self.fail(f"cannot reach the broker at REDIS_URL: {type(exc).__name__}", EXIT_TEMPFAIL)
        self.stdout.write(f"Enqueued the fan-out (message {message.message_id}).")
