from __future__ import annotations

import time

import fakeredis
import pytest

from scheduler.leader import LEADER_KEY, LeaderLock


@pytest.fixture
def client() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(server=fakeredis.FakeServer())


def test_second_scheduler_cannot_take_the_lock_while_the_first_holds_it(client):
    first = LeaderLock(client, ttl_seconds=30)
    second = LeaderLock(client, ttl_seconds=30)

    assert first.acquire()
    assert not second.acquire()
    assert first.owned()
    assert not second.owned()


def test_extend_keeps_the_lock_past_its_ttl(client):
    leader = LeaderLock(client, ttl_seconds=0.3)
    leader.acquire()

    time.sleep(0.2)
    assert leader.extend()
    time.sleep(0.2)

    assert leader.owned()
    assert not LeaderLock(client, ttl_seconds=0.3).acquire()


def test_expired_lock_is_taken_over_and_the_old_leader_cannot_extend_it(client):
    old = LeaderLock(client, ttl_seconds=0.1)
    new = LeaderLock(client, ttl_seconds=30)
    old.acquire()

    time.sleep(0.2)

    assert new.acquire()
    assert not old.extend()
    assert not old.owned()


def test_release_frees_the_lock_but_never_a_successors(client):
    old = LeaderLock(client, ttl_seconds=0.1)
    old.acquire()
    time.sleep(0.2)
    successor = LeaderLock(client, ttl_seconds=30)
    successor.acquire()

    old.release()

    assert successor.owned()
    successor.release()
    assert client.get(LEADER_KEY) is None
