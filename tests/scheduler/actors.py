"""Actors for the scheduler's tests: they only need to exist and be enqueued."""

import dramatiq


@dramatiq.actor
def ping() -> None:
    pass


@dramatiq.actor
def pong() -> None:
    pass
