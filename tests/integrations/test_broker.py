"""``enqueue_many``: pipelined enqueue on a real Redis, one by one on other brokers."""

from __future__ import annotations

import threading
from collections import Counter

import dramatiq
import pytest
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker

from apps.integrations.broker import enqueue_many

COUNT = 2_500  # three pipelined chunks, the last one partial


class EnqueueHooks(dramatiq.Middleware):
    """Records each enqueue hook as (hook, message id), in the order they ran."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def before_enqueue(self, broker, message, delay):
        self.events.append(("before", message.message_id))

    def after_enqueue(self, broker, message, delay):
        self.events.append(("after", message.message_id))

    def ids(self, hook: str) -> list[str]:
        return [message_id for name, message_id in self.events if name == hook]


class Calls:
    """Arguments the actor was called with, from any worker thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.args: list[int] = []

    def record(self, n: int) -> None:
        with self._lock:
            self.args.append(n)


@pytest.fixture
def hooks() -> EnqueueHooks:
    return EnqueueHooks()


@pytest.fixture
def calls() -> Calls:
    return Calls()


@pytest.fixture
def redis_broker(redis_url, hooks):
    broker = RedisBroker(url=redis_url)
    broker.add_middleware(hooks)
    yield broker
    broker.flush_all()
    broker.close()
    broker.client.connection_pool.disconnect()


def record_actor(broker: dramatiq.Broker, calls: Calls) -> dramatiq.Actor:
    return dramatiq.actor(calls.record, broker=broker, actor_name="record", queue_name="q")


def test_enqueue_many_puts_every_message_on_the_redis_queue(redis_broker, redis_url, calls):
    actor = record_actor(redis_broker, calls)

    count = enqueue_many((actor.message(n) for n in range(COUNT)), broker=redis_broker)

    client = redis.Redis.from_url(redis_url)
    assert count == COUNT
    assert client.llen("dramatiq:q") == COUNT
    # Each enqueue got its own redis message id: none overwrote another in the hash.
    assert client.hlen("dramatiq:q.msgs") == COUNT


def test_worker_processes_each_bulk_enqueued_message_exactly_once(redis_broker, calls):
    actor = record_actor(redis_broker, calls)
    enqueue_many((actor.message(n) for n in range(COUNT)), broker=redis_broker)
    worker = dramatiq.Worker(redis_broker, worker_threads=8, worker_timeout=100)

    worker.start()
    try:
        redis_broker.join("q", timeout=30_000)
    finally:
        worker.stop()

    assert sorted(calls.args) == list(range(COUNT))


def test_enqueue_hooks_run_once_per_bulk_enqueued_message(redis_broker, hooks, calls):
    actor = record_actor(redis_broker, calls)
    messages = [actor.message(n) for n in range(COUNT)]

    enqueue_many(messages, broker=redis_broker)

    expected = Counter(m.message_id for m in messages)
    assert Counter(hooks.ids("before")) == expected
    assert Counter(hooks.ids("after")) == expected


def test_enqueue_many_of_nothing_enqueues_nothing(redis_broker, redis_url, hooks, calls):
    record_actor(redis_broker, calls)

    count = enqueue_many([], broker=redis_broker)

    assert count == 0
    assert redis.Redis.from_url(redis_url).llen("dramatiq:q") == 0
    assert hooks.events == []


def test_enqueue_many_on_a_stub_broker_enqueues_one_by_one(hooks, calls):
    broker = StubBroker(middleware=[hooks])
    actor = record_actor(broker, calls)
    messages = [actor.message(n) for n in range(3)]

    count = enqueue_many(messages, broker=broker)

    assert count == 3
    assert [dramatiq.Message.decode(data).args for data in broker.queues["q"].queue] == [
        (0,),
        (1,),
        (2,),
    ]
    # Each message's before and after hooks ran around its own enqueue.
    assert hooks.events == [(hook, m.message_id) for m in messages for hook in ("before", "after")]
    broker.flush_all()
    broker.close()
