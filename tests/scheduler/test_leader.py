"""The leader lock against fakeredis.

Expiry is Redis's clock, so no test sleeps for a TTL: the lock's remaining TTL is read and set
directly (what time passing does to the key), and a real expiry is waited for as a condition.
"""

from __future__ import annotations

import fakeredis
import pytest

from scheduler.leader import LEADER_KEY, LeaderLock
from tests.processes import wait_until


@pytest.fixture
def client() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(server=fakeredis.FakeServer())


def expired(client: fakeredis.FakeRedis) -> bool:
    return not client.exists(LEADER_KEY)


def test_second_scheduler_cannot_take_the_lock_while_the_first_holds_it(client):
    first = LeaderLock(client, ttl_seconds=30)
    second = LeaderLock(client, ttl_seconds=30)

    assert first.acquire()
    assert not second.acquire()
    assert first.owned()
    assert not second.owned()


def test_extend_resets_the_ttl_so_the_lock_outlives_its_first_expiry(client):
    leader = LeaderLock(client, ttl_seconds=30)
    leader.acquire()
    # Age the lock to its last 5 s, as 25 s without a heartbeat would.
    client.pexpire(LEADER_KEY, 5_000)

    assert leader.extend()

    # The full TTL again (replaced, not added to the 5 s left); only a 25 s stall between
    # the two calls could bring it back under 5 s.
    assert 5_000 < client.pttl(LEADER_KEY) <= 30_000
    assert leader.owned()
    assert not LeaderLock(client, ttl_seconds=30).acquire()


def test_expired_lock_is_taken_over_and_the_old_leader_cannot_extend_it(client):
    old = LeaderLock(client, ttl_seconds=0.1)
    new = LeaderLock(client, ttl_seconds=30)
    old.acquire()

    wait_until(lambda: expired(client), timeout=30, what="the old lock to expire")

    assert new.acquire()
    assert not old.extend()
    assert not old.owned()


def test_release_frees_the_lock_but_never_a_successors(client):
    old = LeaderLock(client, ttl_seconds=0.1)
    old.acquire()
    wait_until(lambda: expired(client), timeout=30, what="the old lock to expire")
    successor = LeaderLock(client, ttl_seconds=30)
    successor.acquire()

    old.release()

    assert successor.owned()
    successor.release()
    assert client.get(LEADER_KEY) is None
