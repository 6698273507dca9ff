"""Request pacing per GitHub token, shared by every worker through Redis.

GitHub asks integrators to send requests for one token serially and caps each endpoint at
about 900 points a minute (secondary limits). PyGithub's own throttle (0.25 s between any two
requests of one client object) is per process and per client: many workers on one token
ignore each other and can trip the secondary limit together, while a single sync crawls at
four requests a second. Here every request first reserves the next free slot of its token in
Redis (a Lua script, so reservations by concurrent workers never overlap) and waits for that
slot: a few tens of milliseconds, never a rate-limit reset.

Tokens are identified by a SHA-256 prefix, never stored. Without Redis (the CLI on a machine
without it), pacing falls back to this process alone.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from functools import lru_cache

import redis
from django.conf import settings

logger = logging.getLogger(__name__)

# Reserve the slot at max(now, next free); the key expires once the token has been idle long
# enough that its schedule no longer matters. Times are Redis's own clock, so workers on
# different machines agree.
_RESERVE = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local interval = tonumber(ARGV[1])
local free = tonumber(redis.call('GET', KEYS[1]) or '0')
local slot = math.max(now_ms, free)
redis.call('SET', KEYS[1], slot + interval, 'PX', interval * 10 + 60000)
return slot - now_ms
"""

# A reservation further out than this means a crowd of workers on one token; waiting longer
# would just hold a thread, so the request goes out anyway and GitHub's answer decides.
MAX_WAIT_SECONDS = 5.0


def token_digest(token: str) -> str:
    """What identifies a token in Redis (pacing, rate budget): a SHA-256 prefix, never the
    token."""
    return hashlib.sha256(token.encode()).hexdigest()[:24]


def token_key(token: str) -> str:
    return "tformance:pacing:" + token_digest(token)


class TokenPacer:
    """Spaces requests made with one token at least ``interval`` seconds apart."""

    def __init__(self, token: str, *, interval: float, client: redis.Redis | None) -> None:
        self.key = token_key(token)
        self.interval_ms = max(int(interval * 1000), 0)
        self._client = client
        self._script = client.register_script(_RESERVE) if client is not None else None

    def reserve(self) -> float:
        """Reserve the next slot; return how many seconds until it."""
        if self.interval_ms == 0:
            return 0.0
        if self._script is not None:
            try:
                return int(self._script(keys=[self.key], args=[self.interval_ms])) / 1000
            except redis.RedisError as exc:
                logger.warning("github.pacing_local_fallback", extra={"error": type(exc).__name__})
                self._script = None
        return _local_reserve(self.key, self.interval_ms) / 1000

    def wait(self) -> None:
        delay = self.reserve()
        if delay > 0:
            time.sleep(min(delay, MAX_WAIT_SECONDS))


_local_lock = threading.Lock()
_local_next: dict[str, float] = {}


def _local_reserve(key: str, interval_ms: int) -> float:
    now = time.monotonic() * 1000
    with _local_lock:
        slot = max(now, _local_next.get(key, 0.0))
        _local_next[key] = slot + interval_ms
    return slot - now


@lru_cache(maxsize=4)
def _redis_client(url: str) -> redis.Redis:
    # Short timeouts: pacing must never stall a sync because Redis is slow or gone.
    return redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)


def pacer_for_token(token: str) -> TokenPacer:
    interval = settings.GITHUB_TOKEN_MIN_INTERVAL_MS / 1000
    client = _redis_client(settings.REDIS_URL) if interval > 0 else None
    return TokenPacer(token, interval=interval, client=client)
