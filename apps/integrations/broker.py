"""Enqueueing many messages at once.

``group(...).run()`` and a loop of ``send()`` cost one Redis round trip per message (10,000
sends take seconds); the daily fan-out enqueues one message per repository, so on Redis it
pipelines the broker's own enqueue script instead: same keys, same message format, one round
trip per chunk. Other brokers (the StubBroker in tests) enqueue one by one.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice
from typing import TypeVar
from uuid import uuid4

import dramatiq
import redis
from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import current_millis

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
