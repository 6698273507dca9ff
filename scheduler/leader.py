"""The leader lock: only the scheduler holding it enqueues, so two machines never double-send."""

from __future__ import annotations

import logging

import redis
from redis.exceptions import LockError
from redis.lock import Lock

logger = logging.getLogger(__name__)

LEADER_KEY = "tformance:scheduler:leader"


class LeaderLock:
    """A Redis lock with a short TTL that the leader keeps extending.

    If the leader dies the key expires after `ttl_seconds` and a standby takes over. The token
    is shared between threads (`thread_local=False`): APScheduler extends and checks the lock
    from its worker threads, not from the thread that acquired it.
    """

    def __init__(self, client: redis.Redis, *, ttl_seconds: float, key: str = LEADER_KEY) -> None:
        self.ttl_seconds = ttl_seconds
        self._lock = Lock(client, key, timeout=ttl_seconds, thread_local=False)

    def acquire(self) -> bool:
        """Take the lock if it is free; never waits. Redis errors propagate."""
        return bool(self._lock.acquire(blocking=False))

    def extend(self) -> bool:
        """Reset the TTL; False if the lock is no longer ours or Redis cannot be reached."""
        try:
            self._lock.extend(self.ttl_seconds, replace_ttl=True)
        except LockError as error:
            logger.warning("scheduler.lock_lost reason=%r", str(error))
            return False
        except redis.RedisError as error:
            logger.warning("scheduler.lock_extend_failed error=%r", str(error))
            return False
        return True

    def owned(self) -> bool:
        """True only if Redis still holds our token; an unreachable Redis counts as not owned."""
        try:
            return self._lock.owned()
        except redis.RedisError as error:
            logger.warning("scheduler.lock_check_failed error=%r", str(error))
            return False

    def release(self) -> None:
        """Give the lock up if we still hold it, so a standby need not wait for the TTL."""
        if self._lock.local.token is None:
            return
        try:
            self._lock.release()
        except LockError:
            pass  # Already expired or taken over: nothing of ours to release.
        except redis.RedisError as error:
            logger.warning("scheduler.lock_release_failed error=%r", str(error))
