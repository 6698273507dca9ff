"""Per-token pacing shared through Redis (fakeredis with Lua, no sleeping in the checks).

``reserve()`` answers "wait this long for your slot", measured from the moment it asks. The
checks use an interval far longer than any test can take, so no slot lapses between two calls
however slow the machine, and bound each wait by the time the calls took instead of a
tolerance.
"""

from __future__ import annotations

import time
import uuid

import fakeredis
import pytest
import redis

from apps.integrations.services.pacing import TokenPacer, token_key

TOKEN = "ghp_pacingtoken000000000000000000000001"
HOUR = 3600.0


@pytest.fixture
def shared_redis():
    return fakeredis.FakeRedis(server=fakeredis.FakeServer())


def test_two_workers_on_one_token_get_slots_an_interval_apart(shared_redis):
    first = TokenPacer(TOKEN, interval=HOUR, client=shared_redis)
    second = TokenPacer(TOKEN, interval=HOUR, client=shared_redis)

    started = time.monotonic()
    waits = [first.reserve(), second.reserve(), first.reserve()]
    took = time.monotonic() - started + 0.001  # Redis's clock is read in whole milliseconds

    assert waits[0] == 0
    assert HOUR - took <= waits[1] <= HOUR
    assert 2 * HOUR - took <= waits[2] <= 2 * HOUR


def test_different_tokens_do_not_wait_for_each_other(shared_redis):
    TokenPacer(TOKEN, interval=0.5, client=shared_redis).reserve()

    wait = TokenPacer("ghp_other", interval=0.5, client=shared_redis).reserve()

    assert wait == 0


def test_the_token_itself_is_never_stored_in_redis(shared_redis):
    TokenPacer(TOKEN, interval=0.07, client=shared_redis).reserve()

    keys = [key.decode() for key in shared_redis.keys("*")]
    assert keys == [token_key(TOKEN)]
    assert TOKEN not in keys[0]


def test_pacing_falls_back_to_this_process_when_redis_is_down():
    unreachable = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    # The fallback schedule lives in this process for an hour: a token of its own.
    pacer = TokenPacer(f"ghp_{uuid.uuid4().hex}", interval=HOUR, client=unreachable)

    started = time.monotonic()
    waits = [pacer.reserve(), pacer.reserve()]
    took = time.monotonic() - started

    assert waits[0] == 0
    assert HOUR - took <= waits[1] <= HOUR


def test_zero_interval_disables_pacing(shared_redis):
    pacer = TokenPacer(TOKEN, interval=0, client=shared_redis)

    assert [pacer.reserve(), pacer.reserve()] == [0, 0]
    assert shared_redis.keys("*") == []


def test_workers_sharing_a_token_are_paced_through_redis(emulator, redis_url, settings):
    import threading

    from apps.integrations.services import pacing
    from apps.integrations.services.github_client import client_for_token
    from tests import builders

    settings.REDIS_URL = redis_url
    settings.GITHUB_TOKEN_MIN_INTERVAL_MS = 100
    pacing._redis_client.cache_clear()
    emulator.add_repo("acme/widgets")
    arrivals: list[float] = []
    emulator.add_hook(lambda req: arrivals.append(time.monotonic()))

    def worker() -> None:
        client = client_for_token(builders.TOKEN)  # one client per worker, as in production
        for _ in range(3):
            client.get_repository("acme/widgets")

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Six requests on one token take at least five intervals however the two workers
    # interleave (unpaced, they all land within a few milliseconds). Individual gaps are not
    # asserted: a request may leave a little after its slot on a loaded machine.
    assert len(arrivals) == 6
    assert max(arrivals) - min(arrivals) >= 0.4
