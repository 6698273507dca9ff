"""Enqueueing many messages at once.

``group(...).run()`` and a loop of ``send()`` cost one Redis round trip per message (10,000
sends take seconds); the daily fan-out enqueues one message per repository, so on Redis it
pipelines the broker's own enqueue script instead: same keys, same message format, one round
trip per chunk. Other brokers (the StubBroker in tests) enqueue one by one.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import TypeVar
from uuid import uuid4

import dramatiq
import redis
from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.common import current_millis
from dramatiq.errors import ConnectionClosed
from dramatiq.middleware import CurrentMessage

CHUNK = 1_000
# What enqueueing raises when the queue cannot take messages (Redis down, unreachable,
# out of memory).
UNAVAILABLE = (redis.RedisError, dramatiq.errors.BrokerError)

T = TypeVar("T")


def chunks(items: Iterable[T], size: int | None = None) -> Iterator[list[T]]:
    """``items`` in lists of ``size`` (default ``CHUNK``: what one pipeline round trip
    carries)."""
    iterator = iter(items)
    while chunk := list(islice(iterator, size or CHUNK)):
        yield chunk


def enqueue_many(messages: Iterable[Message], *, broker: dramatiq.Broker | None = None) -> int:
    """Enqueue ``messages`` (no delay); returns how many. Middleware enqueue hooks still run."""
    broker = broker or dramatiq.get_broker()
    if not isinstance(broker, RedisBroker):
        count = 0
        for message in messages:
            broker.enqueue(message)
            count += 1
        return count

    # Mirrors RedisBroker.enqueue: a unique redis_message_id per enqueue, then the dispatch
    # script's "enqueue" command (HSET <queue>.msgs + RPUSH <queue>), here on a pipeline.
    dispatch = broker.scripts["dispatch"]
    unpack = broker._max_unpack_size()
    count = 0
    for chunk in chunks(messages):
        pipeline = broker.client.pipeline(transaction=False)
        prepared = []
        for message in chunk:
            message = message.copy(options={"redis_message_id": str(uuid4())})
            broker.emit_before("enqueue", message, None)
            dispatch(
                keys=[broker.namespace],
                args=[
                    "enqueue",
                    current_millis(),
                    message.queue_name,
                    broker.broker_id,
                    broker.heartbeat_timeout,
                    broker.dead_message_ttl,
                    0,  # no maintenance inside a bulk write
                    unpack,
                    message.options["redis_message_id"],
                    message.encode(),
                ],
                client=pipeline,
            )
            prepared.append(message)
        pipeline.execute()
        for message in prepared:
            broker.emit_after("enqueue", message, None)
        count += len(prepared)
    return count


class _ReclaimingConsumer(_RedisConsumer):
    """A consumer that, for a delay queue, first takes back the delayed messages this broker
    fetched earlier and then forgot.

    Dramatiq's worker holds delayed messages (rate-limit deferrals, retries, lease waits) in
    memory until their eta, and empties that memory when its Redis connection fails; Redis
    still lists them as unacked under this broker's id, and because the worker stays alive,
    broker maintenance (which requeues a *dead* worker's messages) never returns them. The
    worker builds a new consumer after a connection error, so a new delay-queue consumer
    requeues its own unacked set once, before its first fetch.
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self._reclaim = self.queue_name.endswith(".DQ")

    def __next__(self) -> object:
        if self._reclaim:
            acks = f"{self.broker.namespace}:__acks__.{self.broker.broker_id}.{self.queue_name}"
            try:
                ids = self.broker.client.smembers(acks)
                if ids:
                    self.logger.warning("Reclaiming %d delayed messages.", len(ids))
                    self.broker.do_requeue(self.queue_name, *ids)
            except redis.ConnectionError as error:
                raise ConnectionClosed(error) from None
            self._reclaim = False
        return super().__next__()


class SyncRedisBroker(RedisBroker):
    """The project's Redis broker: Dramatiq's, made to survive a Redis restart.

    - Delay queues reclaim the delayed messages a connection error made the worker forget
      (see ``_ReclaimingConsumer``).
    - Inside a worker (while a message is being processed), an enqueue that finds Redis
      unreachable waits for it, up to ``ENQUEUE_PATIENCE_SECONDS``: the follow-up a sync sends
      (a deferral, a continuation) or the retry Retries sends would otherwise be lost while
      the message itself is acked once Redis returns. Outside workers (the CLI, the admin,
      the scheduler) an enqueue still fails at once, so they can say so.
    """

    ENQUEUE_PATIENCE_SECONDS = 120

    @property
    def consumer_class(self) -> type[_RedisConsumer]:
        return _ReclaimingConsumer

    def enqueue(self, message: Message, *, delay: int | None = None) -> Message:
        deadline = time.monotonic() + self.ENQUEUE_PATIENCE_SECONDS
        while True:
            try:
                return super().enqueue(message, delay=delay)
            except redis.ConnectionError:
                in_worker = CurrentMessage.get_current_message() is not None
                if not in_worker or time.monotonic() > deadline:
                    raise
                self.logger.warning("Redis is unreachable; retrying the enqueue.")
                time.sleep(1)
